/* Native CPU kernels of the NumPy backend (edgeinfer/backends/numpy/native_kernels.py loads them with ctypes).
 *
 * NumPy has no fused multiply-add over a window: its depthwise conv (one einsum pass per tap) is bound
 * by cache bandwidth at ~5 G taps/s, and each bias and activation is one more pass. These kernels keep
 * a pixel's accumulators in registers across all taps and write the result once, with the bias and the
 * activation applied on the way out. Also here: a conv's epilogue (bias + residual + activation) in one
 * pass, a channels-last MaxPool, and the im2col (patch gather) of group-1 convs that NumPy's sgemm then runs.
 *
 * Plain C with GCC/Clang vector extensions, no Python or NumPy headers: a build without a C compiler,
 * or with one that lacks these extensions (MSVC), skips the kernels and the backend stays pure NumPy.
 *
 * One ISA at a time: conv_hwc_isa.h holds the kernels, written for vectors of VL floats, and is compiled once
 * per instruction set at that set's register width: AVX-512 (16), AVX2 + FMA (8) and the x86-64 baseline SSE2
 * (4) on x86-64, the compiler's baseline alone elsewhere (NEON's 4 on aarch64). The caller names the widest
 * ISA to use (edgeinfer_cpu_kernels_isa_* say which exist and which this CPU runs), so one library measures
 * every class it holds. Each call takes the widest of those whose width divides its channel count.
 *
 * Every entry point checks its arguments first (geometry, buffer lengths, the ISA) and returns 0, or an
 * error code that edgeinfer_cpu_kernels_error() explains: a forged model must never crash the process here.
 *
 * Every tensor is channels-last with contiguous channels; the row and pixel strides (in floats) are free,
 * so a result can land in a channel range of a wider buffer (an in-place Concat).
 */
#include <stdint.h>
#include <stdlib.h>
#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

/* Bumped whenever a signature or the geometry layout changes, so a stale build is never called. */
#define EDGEINFER_CPU_KERNELS_ABI 5

int edgeinfer_cpu_kernels_abi(void) { return EDGEINFER_CPU_KERNELS_ABI; }

/* The geometry of one depthwise conv or pool, as the int64 array the caller passes. */
enum {
    G_H, G_W, G_C,          /* input image */
    G_XROW, G_XPIX,         /* input strides */
    G_KH, G_KW, G_SH, G_SW, G_DH, G_DW, G_PT, G_PL,
    G_WO, G_YROW, G_YPIX,   /* output row width and strides */
    G_I0, G_I1,             /* output rows to compute */
    G_COUNT
};

/* Activation kinds (NATIVE_KINDS in edgeinfer/activations.py, checked by tests/test_activations_table.py); a and b
 * are their parameters. ACT_CLAMP with a, b = -inf, inf is no activation. */
enum { ACT_CLAMP, ACT_LEAKY_RELU, ACT_HARD_SIGMOID, ACT_HARD_SWISH, ACT_SIGMOID, ACT_SILU, ACT_COUNT };
/* internal: ACT_CLAMP to [-inf, inf], no activation (two operations fewer per vector) */
enum { ACT_IDENTITY = ACT_COUNT };

static inline float clamp1(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* ---- the ISA builds ---- */

#if defined(__x86_64__) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 9)) && \
    !defined(EDGEINFER_BASELINE_ONLY)
#define EDGEINFER_X86_ISAS 1
enum { ISA_BASELINE, ISA_AVX2, ISA_AVX512, ISA_COUNT };
static const char *const ISA_NAMES[ISA_COUNT] = {"sse", "avx2", "avx512"};
static const int ISA_LANES[ISA_COUNT] = {4, 8, 16};

#define VL 16
#define ISA(name) name##_avx512
#define TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#define DW_PIXELS 4
#include "conv_hwc_isa.h"
#include "im2col_isa.h"
#undef VL
#undef ISA
#undef TARGET
#undef DW_PIXELS

#define VL 8
#define ISA(name) name##_avx2
#define TARGET __attribute__((target("avx2,fma")))
#define DW_PIXELS 1
#include "conv_hwc_isa.h"
#include "im2col_isa.h"
#undef VL
#undef ISA
#undef TARGET
#undef DW_PIXELS

static int isa_runs(int isa) {
    __builtin_cpu_init();
    switch (isa) {
    case ISA_BASELINE: return 1;
    case ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case ISA_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    default: return 0;
    }
}
#else
enum { ISA_BASELINE, ISA_COUNT };
#if defined(__aarch64__)
static const char *const ISA_NAMES[ISA_COUNT] = {"neon"};
#elif defined(__x86_64__)
static const char *const ISA_NAMES[ISA_COUNT] = {"sse"};
#else
static const char *const ISA_NAMES[ISA_COUNT] = {"generic"};
#endif
static const int ISA_LANES[ISA_COUNT] = {4};

static int isa_runs(int isa) { return isa == ISA_BASELINE; }
#endif

/* the baseline: x86-64's SSE2, or whatever the compiler targets (four pixels in flight on aarch64's 32 registers,
 * whose small cores may be in-order; unmeasured there) */
#define VL 4
#define ISA(name) name##_baseline
#define TARGET
#if defined(__aarch64__)
#define DW_PIXELS 4
#else
#define DW_PIXELS 1
#endif
#include "conv_hwc_isa.h"
#include "im2col_isa.h"
#undef VL
#undef ISA
#undef TARGET
#undef DW_PIXELS

int edgeinfer_cpu_kernels_isa_count(void) { return ISA_COUNT; }

/* "sse", "avx2", "avx512" (x86-64), "neon" (aarch64) or "generic"; NULL past the last */
const char *edgeinfer_cpu_kernels_isa_name(int isa) { return isa >= 0 && isa < ISA_COUNT ? ISA_NAMES[isa] : 0; }

int edgeinfer_cpu_kernels_isa_lanes(int isa) { return isa >= 0 && isa < ISA_COUNT ? ISA_LANES[isa] : 0; }

/* whether this CPU runs the ISA build (the OS saving its registers included) */
int edgeinfer_cpu_kernels_isa_runs(int isa) { return isa >= 0 && isa < ISA_COUNT && isa_runs(isa); }

/* The ISA a call with c channels takes: the widest up to isa whose width divides c (the baseline takes any). */
static int isa_for(int isa, int64_t c) {
    while (isa > ISA_BASELINE && c % ISA_LANES[isa] != 0) isa--;
    return isa;
}

/* ---- argument checks ---- */

/* Error codes: 1 + i for geometry field g[i], then these. */
enum {
    E_GEOMETRY_LENGTH = 64, E_ISA, E_KIND, E_NULL, E_X_LENGTH, E_W_LENGTH, E_BIAS_LENGTH, E_Y_LENGTH, E_Z_LENGTH,
    E_PIXELS, E_CHANNELS, E_Y_ROW, E_Z_ROW, E_STRIDES, E_LAST
};

static const char *const FIELD_RULES[G_COUNT] = {
    "input height must be >= 1",
    "input width must be >= 1",
    "channels must be >= 1",
    "input row stride must be >= width * pixel stride",
    "input pixel stride must be >= channels",
    "kernel_shape[0] must be >= 1",
    "kernel_shape[1] must be >= 1",
    "strides[0] must be >= 1",
    "strides[1] must be >= 1",
    "dilations[0] must be >= 1",
    "dilations[1] must be >= 1",
    "pads[0] (top) must be >= 0 and less than the window's height, dilations[0] * (kernel_shape[0] - 1) + 1",
    "pads[1] (left) must be >= 0 and less than the window's width, dilations[1] * (kernel_shape[1] - 1) + 1",
    "output width must be >= 1, with its last window starting inside the image",
    "output row stride must be >= output width * pixel stride",
    "output pixel stride must be >= channels",
    "first output row must be >= 0",
    "end output row must be >= the first, with the last row's window starting inside the image",
};

static const char *const OTHER_RULES[E_LAST - E_GEOMETRY_LENGTH] = {
    "the geometry array must have 18 entries",
    "the ISA build must exist and run on this CPU",
    "the activation kind must be one of ACT_* (0..5)",
    "the input, weight and output pointers must not be NULL",
    "the input buffer is shorter than the geometry reads",
    "the weight buffer is shorter than kernel_shape[0] * kernel_shape[1] * channels",
    "the bias buffer is shorter than the channels",
    "the output buffer is shorter than the geometry writes",
    "the residual buffer is shorter than the pixels read",
    "pixels must be >= 0",
    "channels must be >= 1",
    "the output row stride must be >= channels",
    "the residual row stride must be >= channels",
    "the input and output strides must be >= 0",
};

/* What went wrong, for an error code a kernel returned (the geometry field's name and rule for codes 1..18). */
const char *edgeinfer_cpu_kernels_error(int code) {
    if (code >= 1 && code <= G_COUNT) return FIELD_RULES[code - 1];
    if (code >= E_GEOMETRY_LENGTH && code < E_LAST) return OTHER_RULES[code - E_GEOMETRY_LENGTH];
    return code == 0 ? "no error" : "unknown error code";
}

/* every geometry size and stride stays below this, so products of two fit an int64 */
#define LIMIT INT32_MAX

static int in_range(int64_t v, int64_t lo) { return v >= lo && v <= LIMIT; }

/* Whether 1 + (n1 - 1) * s1 + (n2 - 1) * s2 + (n3 - 1), the floats from the first element of an (n1, n2, n3)
 * block with strides (s1, s2, 1) to its last, fits in len; every n >= 1 and s >= 0. */
static int block_fits(int64_t n1, int64_t s1, int64_t n2, int64_t s2, int64_t n3, int64_t len) {
    int64_t a, b, end;
    if (__builtin_mul_overflow(n1 - 1, s1, &a) || __builtin_mul_overflow(n2 - 1, s2, &b)) return 0;
    if (__builtin_add_overflow(a, b, &end) || __builtin_add_overflow(end, n3, &end)) return 0;
    return end <= len;
}

/* 0 if the window of a depthwise/pool/im2col geometry is one the kernels handle, else the error code. Every
 * output window overlaps the image (pads less than the window, the last window starting inside): then every
 * index the kernels form lies inside the image and no arithmetic overflows. */
static int check_window(const int64_t *g, int64_t g_len) {
    if (!g || g_len != G_COUNT) return E_GEOMETRY_LENGTH;
    static const int positive[] = {G_H, G_W, G_C, G_KH, G_KW, G_SH, G_SW, G_DH, G_DW, G_WO};
    for (unsigned i = 0; i < sizeof positive / sizeof positive[0]; i++)
        if (!in_range(g[positive[i]], 1)) return 1 + positive[i];
    const int64_t span_h = (g[G_KH] - 1) * g[G_DH], span_w = (g[G_KW] - 1) * g[G_DW]; /* window extent - 1 */
    if (g[G_PT] < 0 || g[G_PT] > span_h || g[G_PT] > LIMIT) return 1 + G_PT;
    if (g[G_PL] < 0 || g[G_PL] > span_w || g[G_PL] > LIMIT) return 1 + G_PL;
    if ((g[G_WO] - 1) * g[G_SW] - g[G_PL] >= g[G_W]) return 1 + G_WO;
    if (!in_range(g[G_I0], 0)) return 1 + G_I0;
    if (!in_range(g[G_I1], g[G_I0]) || (g[G_I1] > 0 && (g[G_I1] - 1) * g[G_SH] - g[G_PT] >= g[G_H])) return 1 + G_I1;
    return 0;
}

/* check_window, and channels-last strides: the pixels of a row (and the rows) do not overlap */
static int check_geometry(const int64_t *g, int64_t g_len) {
    int err = check_window(g, g_len);
    if (err) return err;
    if (!in_range(g[G_XPIX], g[G_C])) return 1 + G_XPIX;
    if (!in_range(g[G_XROW], 0) || g[G_XROW] < g[G_W] * g[G_XPIX]) return 1 + G_XROW;
    if (!in_range(g[G_YPIX], g[G_C])) return 1 + G_YPIX;
    if (!in_range(g[G_YROW], 0) || g[G_YROW] < g[G_WO] * g[G_YPIX]) return 1 + G_YROW;
    return 0;
}

/* Whether the floats from the first element of an (n[0], n[1], n[2]) block with strides s (each >= 0) to its last
 * fit in len; an empty block always fits. */
static int strided_fits(const int64_t n[3], const int64_t s[3], int64_t len) {
    int64_t end = 1, step;
    for (int i = 0; i < 3; i++) {
        if (n[i] < 1) return 1;
        if (__builtin_mul_overflow(n[i] - 1, s[i], &step) || __builtin_add_overflow(end, step, &end)) return 0;
    }
    return end <= len;
}

static int check_isa(int isa) { return isa >= 0 && isa < ISA_COUNT && isa_runs(isa) ? 0 : E_ISA; }

/* ---- entry points ---- */

/* y[i, j, :] = act(bias + sum over taps (a, b) of x[i*sh - pt + a*dh, j*sw - pl + b*dw, :] * w[a, b, :]) for
 * the output rows g[G_I0] <= i < g[G_I1]; x outside the image reads as zero. w is (kh, kw, C) contiguous;
 * bias may be NULL. The *_len arguments are the floats each buffer holds from its pointer on. */
int edgeinfer_depthwise_hwc(int32_t isa, const float *x, int64_t x_len, const float *wt, int64_t wt_len,
                            const float *bias, int64_t bias_len, float *y, int64_t y_len, const int64_t *g,
                            int64_t g_len, int32_t kind, float a, float b) {
    int err = check_isa(isa);
    if (!err) err = check_geometry(g, g_len);
    if (err) return err;
    if (kind < 0 || kind >= ACT_COUNT) return E_KIND;
    if (!x || !wt || !y) return E_NULL;
    const int64_t c = g[G_C];
    if (!block_fits(g[G_H], g[G_XROW], g[G_W], g[G_XPIX], c, x_len)) return E_X_LENGTH;
    if (!block_fits(g[G_KH], g[G_KW] * c, g[G_KW], c, c, wt_len)) return E_W_LENGTH;
    if (bias && bias_len < c) return E_BIAS_LENGTH;
    if (g[G_I1] > g[G_I0] && !block_fits(g[G_I1], g[G_YROW], g[G_WO], g[G_YPIX], c, y_len)) return E_Y_LENGTH;
    switch (isa_for(isa, c)) {
#ifdef EDGEINFER_X86_ISAS
    case ISA_AVX512: depthwise_avx512(x, wt, c, bias, y, g, kind, a, b); break;
    case ISA_AVX2: depthwise_avx2(x, wt, c, bias, y, g, kind, a, b); break;
#endif
    default: depthwise_baseline(x, wt, c, bias, y, g, kind, a, b); break;
    }
    return 0;
}

/* Whether the separable form (kh + kw taps per output and a pass through a column buffer) does less work
 * than the direct one (kh * kw taps): windows of 5x5 and up at stride 1, not 3x3 at stride 2. */
static int separable_pays(const int64_t *g) {
    const int64_t reach = (g[G_WO] - 1) * g[G_SW] + (g[G_KW] - 1) * g[G_DW] + 1;
    const int64_t columns = reach < g[G_W] ? reach : g[G_W];
    return g[G_KH] * columns + g[G_KW] * g[G_WO] + columns < g[G_KH] * g[G_KW] * g[G_WO];
}

/* y[i, j, :] = max over taps (a, b) inside the image of x[i*sh - pt + a*dh, j*sw - pl + b*dw, :] (padding
 * never wins, as if it were -inf; NaN wins, as in np.maximum), for output rows g[G_I0] <= i < g[G_I1]; the
 * geometry is the depthwise's. */
int edgeinfer_max_pool_hwc(int32_t isa, const float *x, int64_t x_len, float *y, int64_t y_len, const int64_t *g,
                           int64_t g_len) {
    int err = check_isa(isa);
    if (!err) err = check_geometry(g, g_len);
    if (err) return err;
    if (!x || !y) return E_NULL;
    const int64_t c = g[G_C];
    if (!block_fits(g[G_H], g[G_XROW], g[G_W], g[G_XPIX], c, x_len)) return E_X_LENGTH;
    if (g[G_I1] > g[G_I0] && !block_fits(g[G_I1], g[G_YROW], g[G_WO], g[G_YPIX], c, y_len)) return E_Y_LENGTH;
    isa = isa_for(isa, c);
    /* (if the column buffer cannot be had, the direct form runs) */
    float *col = separable_pays(g) ? malloc(sizeof(float) * (size_t)(g[G_W] * ISA_LANES[isa])) : 0;
    switch (isa) {
#ifdef EDGEINFER_X86_ISAS
    case ISA_AVX512: max_pool_avx512(x, y, g, col); break;
    case ISA_AVX2: max_pool_avx2(x, y, g, col); break;
#endif
    default: max_pool_baseline(x, y, g, col); break;
    }
    free(col);
    return 0;
}

/* The patches of a group-1 conv for its sgemm (im2col_isa.h): column t of output pixel (i, j), for the output rows
 * g[G_I0] <= i < g[G_I1], goes to cols[(i - i0) * g[G_YROW] + j * g[G_YPIX] + t * cols_tap], zero where the tap is
 * padding, t in tap-major order (kernel row, kernel column, channel) or channel_major (channel, kernel row, kernel
 * column); ones: a last column of ones. x[r, q, k] is x[r * g[G_XROW] + q * g[G_XPIX] + k * x_chan]: channels-last
 * (x_chan 1) or planar (the NCHW stem's). Strides are free (>= 0): only the buffers' lengths are checked. */
int edgeinfer_im2col(int32_t isa, const float *x, int64_t x_len, int64_t x_chan, float *cols, int64_t cols_len,
                     int64_t cols_tap, const int64_t *g, int64_t g_len, int32_t channel_major, int32_t ones) {
    int err = check_isa(isa);
    if (!err) err = check_window(g, g_len);
    if (err) return err;
    if (!x || !cols) return E_NULL;
    const int64_t strides[] = {g[G_XROW], g[G_XPIX], x_chan, g[G_YROW], g[G_YPIX], cols_tap};
    for (unsigned i = 0; i < sizeof strides / sizeof strides[0]; i++)
        if (!in_range(strides[i], 0)) return E_STRIDES;
    if (!strided_fits((int64_t[]){g[G_H], g[G_W], g[G_C]}, strides, x_len)) return E_X_LENGTH;
    int64_t taps; /* columns: kh * kw * C (+ 1) */
    if (__builtin_mul_overflow(g[G_KH] * g[G_KW], g[G_C], &taps) || taps >= LIMIT) return 1 + G_C;
    const int64_t out[] = {g[G_I1] - g[G_I0], g[G_WO], taps + (ones != 0)};
    if (!strided_fits(out, strides + 3, cols_len)) return E_Y_LENGTH;
    if (g[G_I1] == g[G_I0]) return 0;
    switch (isa) {
#ifdef EDGEINFER_X86_ISAS
    case ISA_AVX512: im2col_avx512(x, x_chan, cols, cols_tap, g, channel_major, ones); break;
    case ISA_AVX2: im2col_avx2(x, x_chan, cols, cols_tap, g, channel_major, ones); break;
#endif
    default: im2col_baseline(x, x_chan, cols, cols_tap, g, channel_major, ones); break;
    }
    return 0;
}

static void epilogue_isa(int isa, float *y, int64_t pixels, int64_t m, int64_t y_row, const float *bias,
                         const float *z, int64_t z_row, int kind, float a, float b) {
    switch (isa) {
#ifdef EDGEINFER_X86_ISAS
    case ISA_AVX512: epilogue_avx512(y, pixels, m, y_row, bias, z, z_row, kind, a, b); break;
    case ISA_AVX2: epilogue_avx2(y, pixels, m, y_row, bias, z, z_row, kind, a, b); break;
#endif
    default: epilogue_baseline(y, pixels, m, y_row, bias, z, z_row, kind, a, b); break;
    }
}

/* floats per row of grouped pixels (about), and the most the tiled bias holds */
#define GROUP_FLOATS 1024
#define GROUP_MAX 4096

/* y[p, :m] = act(y[p, :m] + bias + z[p, :m]) for p < pixels, in place: a Conv's epilogue in one pass.
 * y rows are y_row floats apart, z rows z_row; bias and z may be NULL. */
int edgeinfer_epilogue_hwc(int32_t isa, float *y, int64_t y_len, int64_t pixels, int64_t m, int64_t y_row,
                           const float *bias, int64_t bias_len, const float *z, int64_t z_len, int64_t z_row,
                           int32_t kind, float a, float b) {
    int err = check_isa(isa);
    if (err) return err;
    if (kind < 0 || kind >= ACT_COUNT) return E_KIND;
    if (pixels < 0) return E_PIXELS;
    if (m < 1) return E_CHANNELS;
    if (y_row < m) return E_Y_ROW;
    if (z && z_row < m) return E_Z_ROW;
    if (pixels == 0) return 0;
    if (!y) return E_NULL;
    if (!block_fits(1, 0, pixels, y_row, m, y_len)) return E_Y_LENGTH;
    if (z && !block_fits(1, 0, pixels, z_row, m, z_len)) return E_Z_LENGTH;
    if (bias && bias_len < m) return E_BIAS_LENGTH;
    if (kind == ACT_CLAMP && a == -__builtin_inff() && b == __builtin_inff()) kind = ACT_IDENTITY;
    const int lanes = ISA_LANES[isa];
    if (pixels > 1 && y_row == m && (!z || z_row == m) && m * lanes <= GROUP_MAX) {
        /* Contiguous pixels: rows of `group` pixels, a multiple of the vector width whatever m is, with the bias
         * tiled to match (YOLOX's 1- and 4-channel heads took a vector and a loop per pixel otherwise). */
        float tiled[GROUP_MAX];
        int64_t repeat = GROUP_FLOATS / (m * lanes);
        if (repeat > pixels / lanes) repeat = pixels / lanes;
        const int64_t group = lanes * (repeat > 1 ? repeat : 1), width = group * m;
        const int64_t rows = pixels / group, rest = (pixels - rows * group) * m; /* rest: floats after the rows */
        if (bias)
            for (int64_t p = 0; p < group; p++)
                for (int64_t k = 0; k < m; k++) tiled[p * m + k] = bias[k];
        if (rows) epilogue_isa(isa, y, rows, width, width, bias ? tiled : 0, z, width, kind, a, b);
        /* the pixels left start a group, so the tiled bias fits them too */
        if (rest) epilogue_isa(isa, y + rows * width, 1, rest, rest, bias ? tiled : 0, z ? z + rows * width : 0, rest,
                               kind, a, b);
        return 0;
    }
    epilogue_isa(isa_for(isa, m), y, pixels, m, y_row, bias, z, z_row, kind, a, b);
    return 0;
}
