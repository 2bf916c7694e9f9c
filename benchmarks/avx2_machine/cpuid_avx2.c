/* Make an AVX-512 x86 CPU look like an AVX2-only one to every library in a process (LD_PRELOAD).
 *
 * Why: measuring the AVX2 class on an AVX-512 machine. PoCL can be told to build AVX2 code, but onnxruntime
 * (MLAS), NumPy and OpenBLAS pick their kernels from CPUID at load time and have no switch, so the peer ran its
 * AVX-512 kernels against our AVX2 ones. Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, the `cpuid_fault`
 * flag in /proc/cpuinfo; rr uses it the same way) makes every CPUID instruction raise SIGSEGV; the handler runs
 * the real CPUID and clears the AVX-512 and AMX feature bits before the program sees them. CPUID is executed
 * at start-up only, so the cost is nil after that. XGETBV is not trappable and still reports the ZMM state as
 * enabled; every dispatcher we know (MLAS, NumPy, OpenBLAS, LLVM) needs the CPUID bit too.
 *
 * The program may install its own SIGSEGV action (Python's faulthandler does): sigaction() is interposed so
 * that ours stays installed and the program's is chained for every fault that is not a CPUID.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))
/* CPUID leaf 7 subleaf 0: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL (EBX); VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ
 * (ECX); 4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8 (EDX). */
static const uint32_t LEAF7_EBX = BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31);
static const uint32_t LEAF7_ECX = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
static const uint32_t LEAF7_EDX = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25);
/* Leaf 7 subleaf 1 EAX: AVX512_BF16. Leaf 0xD subleaf 0 EAX: the XSAVE components opmask, ZMM_Hi256, Hi16_ZMM,
 * and AMX's TILECFG, TILEDATA. */
static const uint32_t LEAF7_1_EAX = BIT(5);
static const uint32_t LEAFD_EAX = BIT(5) | BIT(6) | BIT(7) | BIT(17) | BIT(18);

static struct sigaction program_action; /* what the program asked for SIGSEGV, chained for real faults */
static int installed;
static volatile unsigned long emulated; /* CPUIDs answered, printed at exit with CPUID_AVX2_VERBOSE=1 */

static long cpuid_faulting(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void masked_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    cpuid_faulting(0); /* per thread: this thread only, for the one instruction */
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
    cpuid_faulting(1);
    if (leaf == 7 && sub == 0) {
        r[1] &= ~LEAF7_EBX;
        r[2] &= ~LEAF7_ECX;
        r[3] &= ~LEAF7_EDX;
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~LEAF7_1_EAX;
    } else if (leaf == 0xD && sub == 0) {
        r[0] &= ~LEAFD_EAX;
    }
}

static void chain(int sig, siginfo_t *info, void *context) {
    if (program_action.sa_flags & SA_SIGINFO) {
        if (program_action.sa_sigaction) program_action.sa_sigaction(sig, info, context);
        return;
    }
    if (program_action.sa_handler == SIG_IGN) return;
    if (program_action.sa_handler != SIG_DFL && program_action.sa_handler) {
        program_action.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL); /* default: returning re-executes the faulting instruction, which now kills */
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    /* A faulting CPUID is a general-protection fault: SI_KERNEL, not a page fault (so the RIP is readable). */
    if (info->si_code == SI_KERNEL) {
        const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
        if (ip[0] == 0x0f && ip[1] == 0xa2) {
            uint32_t r[4];
            masked_cpuid((uint32_t)regs[REG_RAX], (uint32_t)regs[REG_RCX], r);
            regs[REG_RAX] = r[0];
            regs[REG_RBX] = r[1];
            regs[REG_RCX] = r[2];
            regs[REG_RDX] = r[3];
            regs[REG_RIP] += 2;
            __atomic_add_fetch(&emulated, 1, __ATOMIC_RELAXED);
            return;
        }
    }
    chain(sig, info, context);
}

static int real_sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    static int (*next)(int, const struct sigaction *, struct sigaction *);
    if (!next) next = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
    return next(sig, act, old);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV || !installed) return real_sigaction(sig, act, old);
    if (old) *old = program_action;
    if (act) program_action = *act;
    return 0;
}

static void report(void) { fprintf(stderr, "cpuid_avx2: %lu CPUID instructions answered without AVX-512\n", emulated); }

__attribute__((constructor)) static void start(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (real_sigaction(SIGSEGV, &action, &program_action) != 0 || cpuid_faulting(1) != 0) {
        fprintf(stderr, "cpuid_avx2: this CPU or kernel has no CPUID faulting (no cpuid_fault flag); not masked\n");
        exit(97);
    }
    installed = 1;
    const char *verbose = getenv("CPUID_AVX2_VERBOSE");
    if (verbose && *verbose == '1') atexit(report);
}
