/* Two-way row parallelism for the kernels of conv_hwc.c: a call big enough splits its output rows in chunks that
 * the caller and one worker thread (started on first use, where the process may use two CPUs) take in turn. A
 * 2-core board then runs a MaxPool, a depthwise conv, an im2col or an epilogue on both cores: they are otherwise
 * the single-threaded gaps between NumPy's two-threaded sgemms (SqueezeNet's pools, im2cols and epilogues: ~2.5 ms
 * of a ~9 ms run on the 2-core Xeon).
 *
 * The caller runs chunks until none is left, then waits for the worker's last one if the worker joined in; a
 * worker that a busy machine did not schedule in time, or a forked child that has none, costs nothing. One call
 * at a time uses the worker; a concurrent caller (another Python thread) runs serially.
 * edgeinfer_cpu_kernels_set_threads(1) turns it off.
 *
 * The worker spins briefly (POOL_SPIN pauses) after each task, so that the next kernel of a model run finds it
 * awake, then sleeps on a condition variable. */

typedef void (*rows_fn)(const void *ctx, int64_t r0, int64_t r1);

/* a * b * c, saturating at INT64_MAX (operands >= 0): work units from sizes that a forged geometry may make huge */
static int64_t work_units(int64_t a, int64_t b, int64_t c) {
    int64_t ab, abc;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc)) return INT64_MAX;
    return abc;
}

/* work units (about a float read or written) below which a call stays on the caller's thread: waking the worker
 * costs ~10-30 us in a VM */
#define POOL_MIN_WORK (1 << 17)

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#define POOL_SPIN 4096
#define POOL_CHUNKS 8 /* a worker that wakes late, or a core shared with another process, then costs a chunk at most */

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER, pool_owner = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static int pool_threads = 2; /* edgeinfer_cpu_kernels_set_threads */
static int pool_started;     /* 0: not yet, 1: the worker runs, -1: one CPU only, or it could not start */
static rows_fn pool_fn;      /* the task: fn(ctx, ...) over rows [next, pool_end) in chunks of pool_chunk rows */
static const void *pool_ctx;
static int64_t pool_next, pool_end, pool_chunk;
static unsigned pool_posted, pool_joined, pool_left; /* task numbers (atomics): posted, joined and left by the worker */

static inline void pool_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Run chunks of the posted task until none is left (on either thread). */
static void pool_run_chunks(void) {
    for (;;) {
        const int64_t r0 = __atomic_fetch_add(&pool_next, pool_chunk, __ATOMIC_RELAXED);
        if (r0 >= pool_end) return;
        pool_fn(pool_ctx, r0, r0 + pool_chunk < pool_end ? r0 + pool_chunk : pool_end);
    }
}

/* Join task `task` unless it was closed (its caller ran every chunk): 1 if joined. */
static int pool_join(unsigned task) {
    unsigned expected = task - 1;
    return __atomic_compare_exchange_n(&pool_joined, &expected, task, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void *pool_worker(void *unused) {
    (void)unused;
    unsigned seen = __atomic_load_n(&pool_posted, __ATOMIC_ACQUIRE);
    for (;;) {
        unsigned posted = seen;
        for (int spin = 0; spin < POOL_SPIN && posted == seen; spin++) {
            pool_relax();
            posted = __atomic_load_n(&pool_posted, __ATOMIC_ACQUIRE);
        }
        if (posted == seen) {
            pthread_mutex_lock(&pool_mu);
            while ((posted = __atomic_load_n(&pool_posted, __ATOMIC_ACQUIRE)) == seen)
                pthread_cond_wait(&pool_wake, &pool_mu);
            pthread_mutex_unlock(&pool_mu);
        }
        seen = posted;
        if (pool_join(posted)) {
            pool_run_chunks();
            __atomic_store_n(&pool_left, posted, __ATOMIC_RELEASE);
        }
    }
    return 0;
}

/* A forked child has no worker: it starts its own on first use. */
static void pool_after_fork(void) {
    pool_joined = pool_left = pool_posted; /* (a task the parent had in flight is nobody's now) */
    pthread_mutex_init(&pool_mu, 0);
    pthread_mutex_init(&pool_owner, 0);
    pthread_cond_init(&pool_wake, 0);
    pool_started = 0;
}

static int pool_ready(void) {
    if (__atomic_load_n(&pool_threads, __ATOMIC_RELAXED) < 2) return 0;
    int started = __atomic_load_n(&pool_started, __ATOMIC_ACQUIRE);
    if (started) return started > 0;
    pthread_mutex_lock(&pool_mu);
    if (!pool_started) {
        int cpus = 1;
#if defined(__linux__) && defined(CPU_COUNT)
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
#else
        cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
#endif
        static int fork_handler;
        if (!fork_handler) fork_handler = pthread_atfork(0, 0, pool_after_fork) == 0 ? 1 : -1;
        pthread_t thread;
        pthread_attr_t attr;
        int ok = cpus >= 2 && fork_handler > 0 && pthread_attr_init(&attr) == 0;
        if (ok) {
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            ok = pthread_create(&thread, &attr, pool_worker, 0) == 0;
            pthread_attr_destroy(&attr);
        }
        __atomic_store_n(&pool_started, ok ? 1 : -1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&pool_mu);
    return pool_started > 0;
}

/* fn(ctx, r0, r1) over rows [r0, r1), in POOL_CHUNKS chunks that the caller and the worker take in turn where `work`
 * pays for waking the worker. */
static void run_rows(rows_fn fn, const void *ctx, int64_t r0, int64_t r1, int64_t work) {
    if (r1 - r0 < 2 || work < POOL_MIN_WORK || !pool_ready() || pthread_mutex_trylock(&pool_owner) != 0) {
        fn(ctx, r0, r1);
        return;
    }
    pthread_mutex_lock(&pool_mu);
    pool_fn = fn, pool_ctx = ctx, pool_next = r0, pool_end = r1;
    pool_chunk = (r1 - r0 + POOL_CHUNKS - 1) / POOL_CHUNKS;
    const unsigned task = pool_posted + 1;
    __atomic_store_n(&pool_posted, task, __ATOMIC_RELEASE);
    pthread_cond_signal(&pool_wake);
    pthread_mutex_unlock(&pool_mu);
    pool_run_chunks();
    if (!pool_join(task)) { /* the worker joined: wait for its last chunk, yielding now and then */
        for (unsigned spin = 1; __atomic_load_n(&pool_left, __ATOMIC_ACQUIRE) != task; spin++) {
            if (spin % 1024)
                pool_relax();
            else
                sched_yield();
        }
    }
    pthread_mutex_unlock(&pool_owner);
}

/* threads for the kernels: 1 (the caller's alone) or 2; returns the number in use from now on */
int edgeinfer_cpu_kernels_set_threads(int threads) {
    __atomic_store_n(&pool_threads, threads >= 2 ? 2 : 1, __ATOMIC_RELAXED);
    return threads >= 2 ? 2 : 1;
}
#else
static void run_rows(rows_fn fn, const void *ctx, int64_t r0, int64_t r1, int64_t work) {
    (void)work;
    fn(ctx, r0, r1);
}

int edgeinfer_cpu_kernels_set_threads(int threads) {
    (void)threads;
    return 1;
}
#endif
