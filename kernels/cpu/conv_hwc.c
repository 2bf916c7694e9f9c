/* Native CPU kernels of the NumPy backend (edgeinfer/ops/native_kernels.py loads them with ctypes).
 *
 * NumPy has no fused multiply-add over a window: its depthwise conv (one einsum pass per tap) is bound
 * by cache bandwidth at ~5 G taps/s, and each bias and activation is one more pass. These kernels keep
 * a pixel's accumulators in registers across all taps and write the result once, with the bias and a
 * clamp (ReLU, ReLU6, Clip) applied on the way out: ~20 G taps/s on one AVX-512 core. Also here: a conv's
 * epilogue (bias + residual + activation) in one pass, and a channels-last MaxPool.
 *
 * Plain C with GCC/Clang vector extensions, no Python or NumPy headers: a build without a C compiler,
 * or with one that lacks these extensions (MSVC), skips the kernels and the backend stays pure NumPy.
 * On x86-64 GCC >= 12 builds AVX-512, AVX2 and baseline clones and picks one when the library loads.
 *
 * Every tensor is channels-last with contiguous channels; the row and pixel strides (in floats) are free,
 * so a result can land in a channel range of a wider buffer (an in-place Concat).
 */
#include <stdint.h>

/* Bumped whenever a signature or the geometry layout changes, so a stale build is never called. */
#define EDGEINFER_CPU_KERNELS_ABI 3

int edgeinfer_cpu_kernels_abi(void) { return EDGEINFER_CPU_KERNELS_ABI; }

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && !defined(EDGEINFER_NO_CLONES)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4))); /* unaligned loads and stores */
#define LD(p) (*(const v16u *)(p))
#define ST(p, v) (*(v16u *)(p) = (v))
#define INLINE static inline __attribute__((always_inline))

INLINE v16 select16(vi16 mask, v16 a, v16 b) { return (v16)(((vi16)a & mask) | ((vi16)b & ~mask)); }

/* min(max(v, lo), hi), NaN kept (both comparisons are false for it) as np.clip keeps it */
INLINE v16 clamp16(v16 v, v16 lo, v16 hi) {
    v = select16(v < lo, lo, v);
    return select16(v > hi, hi, v);
}

/* 8-wide vectors for the register-blocked 3x3 path: its 9 weights + 4 accumulators + bias fit AVX2's 16 ymm
 * (and NEON's 32 q) registers; 16-wide ones there spilled to the stack and ran 3x slower. */
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
#define LD8(p) (*(const v8u *)(p))
#define ST8(p, v) (*(v8u *)(p) = (v))

INLINE v8 clamp8(v8 v, v8 lo, v8 hi) {
    v = (v8)(((vi8)lo & (vi8)(v < lo)) | ((vi8)v & ~(vi8)(v < lo)));
    return (v8)(((vi8)hi & (vi8)(v > hi)) | ((vi8)v & ~(vi8)(v > hi)));
}

INLINE float clamp1(float v, float lo, float hi) {
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* The geometry of one depthwise conv, as the int64 array the caller passes. */
enum {
    G_H, G_W, G_C,          /* input image */
    G_XROW, G_XPIX,         /* input strides */
    G_KH, G_KW, G_SH, G_SW, G_DH, G_DW, G_PT, G_PL,
    G_WO, G_YROW, G_YPIX,   /* output row width and strides */
    G_I0, G_I1,             /* output rows to compute */
    G_COUNT
};

/* One output pixel, any window: taps outside the image are skipped (zero padding). */
INLINE void depthwise_pixel(const float *x, const int64_t *g, const float *wt, const float *bias, long r0, long q0,
                            float *yo, v16 vlo, v16 vhi, float lo, float hi, int wide) {
    const long h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const long kh = g[G_KH], kw = g[G_KW], dh = g[G_DH], dw = g[G_DW];
    long a0 = 0, a1 = kh, b0 = 0, b1 = kw;
    while (a0 < kh && r0 + a0 * dh < 0) a0++;
    while (a1 > a0 && r0 + (a1 - 1) * dh >= h) a1--;
    while (b0 < kw && q0 + b0 * dw < 0) b0++;
    while (b1 > b0 && q0 + (b1 - 1) * dw >= w) b1--;
    long k = 0;
    if (wide) /* AVX-512: 16 channels at a time */
        for (; k + 16 <= c; k += 16) {
            v16 acc = {0};
            if (bias) acc = LD(bias + k);
            for (long a = a0; a < a1; a++) {
                const float *xa = x + (r0 + a * dh) * xr + q0 * xp + k, *wa = wt + a * kw * c + k;
                for (long b = b0; b < b1; b++) acc += LD(xa + b * dw * xp) * LD(wa + b * c);
            }
            ST(yo + k, clamp16(acc, vlo, vhi));
        }
    v8 lo8 = {0}, hi8 = {0};
    lo8 += lo;
    hi8 += hi;
    for (; k + 8 <= c; k += 8) {
        v8 acc = {0};
        if (bias) acc = LD8(bias + k);
        for (long a = a0; a < a1; a++) {
            const float *xa = x + (r0 + a * dh) * xr + q0 * xp + k, *wa = wt + a * kw * c + k;
            for (long b = b0; b < b1; b++) acc += LD8(xa + b * dw * xp) * LD8(wa + b * c);
        }
        ST8(yo + k, clamp8(acc, lo8, hi8));
    }
    for (; k < c; k++) {
        float acc = bias ? bias[k] : 0.0f;
        for (long a = a0; a < a1; a++)
            for (long b = b0; b < b1; b++)
                acc += x[(r0 + a * dh) * xr + (q0 + b * dw) * xp + k] * wt[(a * kw + b) * c + k];
        yo[k] = clamp1(acc, lo, hi);
    }
}

/* The pixels of one output row whose 3x3 window lies inside the image (columns jl..jh), 8 channels at a
 * time with the nine weight vectors held in registers. One pixel per iteration, its three rows summed
 * apart: the out-of-order core overlaps consecutive pixels, and few pointers stay live (with four pixels
 * per iteration GCC kept 36 load addresses and spilled them, 3x slower on AVX2). */
INLINE void depthwise_row_3x3(const float *x0, long xr, long xp, long c, long sw, long pl, const float *wt,
                              const float *bias, long jl, long jh, float *yrow, long yp, float lo, float hi) {
    v8 vlo = {0}, vhi = {0};
    vlo += lo;
    vhi += hi;
    for (long c0 = 0; c0 < c; c0 += 8) {
        const v8 w00 = LD8(wt + 0 * c + c0), w01 = LD8(wt + 1 * c + c0), w02 = LD8(wt + 2 * c + c0);
        const v8 w10 = LD8(wt + 3 * c + c0), w11 = LD8(wt + 4 * c + c0), w12 = LD8(wt + 5 * c + c0);
        const v8 w20 = LD8(wt + 6 * c + c0), w21 = LD8(wt + 7 * c + c0), w22 = LD8(wt + 8 * c + c0);
        v8 bv = {0};
        if (bias) bv = LD8(bias + c0);
        const float *r = x0 + (jl * sw - pl) * xp + c0;
        float *out = yrow + jl * yp + c0;
        for (long j = jl; j < jh; j++, r += sw * xp, out += yp) {
            const float *r1 = r + xr, *r2 = r1 + xr;
            const v8 s0 = bv + LD8(r) * w00 + LD8(r + xp) * w01 + LD8(r + 2 * xp) * w02;
            const v8 s1 = LD8(r1) * w10 + LD8(r1 + xp) * w11 + LD8(r1 + 2 * xp) * w12;
            const v8 s2 = LD8(r2) * w20 + LD8(r2 + xp) * w21 + LD8(r2 + 2 * xp) * w22;
            ST8(out, clamp8(s0 + s1 + s2, vlo, vhi));
        }
    }
}

/* The same with 16 channels and four pixels per iteration, for AVX-512 (32 registers): 20% faster there. */
#define TAPS3x3(q)                                                                                    \
    (bv + LD(x0 + (q)) * w00 + LD(x0 + (q) + xp) * w01 + LD(x0 + (q) + 2 * xp) * w02 + LD(x1 + (q)) * w10 + \
     LD(x1 + (q) + xp) * w11 + LD(x1 + (q) + 2 * xp) * w12 + LD(x2 + (q)) * w20 + LD(x2 + (q) + xp) * w21 +  \
     LD(x2 + (q) + 2 * xp) * w22)

INLINE void depthwise_row_3x3_wide(const float *x0, long xr, long xp, long c, long sw, long pl, const float *wt,
                                   const float *bias, long jl, long jh, float *yrow, long yp, float lo, float hi) {
    const float *x1 = x0 + xr, *x2 = x1 + xr;
    v16 vlo = {0}, vhi = {0};
    vlo += lo;
    vhi += hi;
    for (long c0 = 0; c0 < c; c0 += 16) {
        const v16 w00 = LD(wt + 0 * c + c0), w01 = LD(wt + 1 * c + c0), w02 = LD(wt + 2 * c + c0);
        const v16 w10 = LD(wt + 3 * c + c0), w11 = LD(wt + 4 * c + c0), w12 = LD(wt + 5 * c + c0);
        const v16 w20 = LD(wt + 6 * c + c0), w21 = LD(wt + 7 * c + c0), w22 = LD(wt + 8 * c + c0);
        v16 bv = {0};
        if (bias) bv = LD(bias + c0);
        long j = jl;
        for (; j + 4 <= jh; j += 4) {
            const long q = (j * sw - pl) * xp + c0, step = sw * xp;
            const v16 s0 = TAPS3x3(q), s1 = TAPS3x3(q + step), s2 = TAPS3x3(q + 2 * step), s3 = TAPS3x3(q + 3 * step);
            ST(yrow + j * yp + c0, clamp16(s0, vlo, vhi));
            ST(yrow + (j + 1) * yp + c0, clamp16(s1, vlo, vhi));
            ST(yrow + (j + 2) * yp + c0, clamp16(s2, vlo, vhi));
            ST(yrow + (j + 3) * yp + c0, clamp16(s3, vlo, vhi));
        }
        for (; j < jh; j++) ST(yrow + j * yp + c0, clamp16(TAPS3x3((j * sw - pl) * xp + c0), vlo, vhi));
    }
}

#ifndef HAS_AVX512 /* (-DHAS_AVX512=0 tests the 8-wide path on an AVX-512 machine) */
#if defined(__x86_64__) && defined(__GNUC__)
#define HAS_AVX512 __builtin_cpu_supports("avx512f")
#else
#define HAS_AVX512 0
#endif
#endif

/* y[i, j, :] = clamp(bias + sum over taps (a, b) of x[i*sh - pt + a*dh, j*sw - pl + b*dw, :] * w[a, b, :], lo, hi)
 * for the output rows g[G_I0] <= i < g[G_I1]; x outside the image reads as zero. w is (kh, kw, C) contiguous;
 * bias may be NULL; lo, hi = -inf, inf for no activation. */
CLONES void edgeinfer_depthwise_hwc(const float *x, const float *wt, const float *bias, float *y, const int64_t *g,
                                    float lo, float hi) {
    const long h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const long kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];
    const long pt = g[G_PT], pl = g[G_PL], wo = g[G_WO], yr = g[G_YROW], yp = g[G_YPIX];
    v16 vlo = {0}, vhi = {0};
    vlo += lo;
    vhi += hi;
    /* output columns whose window lies inside the row: jl <= j < jh */
    long jl = 0, jh = wo;
    while (jl < wo && jl * sw - pl < 0) jl++;
    while (jh > jl && (jh - 1) * sw - pl + (kw - 1) * dw >= w) jh--;
    const int fast = kh == 3 && kw == 3 && dh == 1 && dw == 1 && c % 8 == 0;
    const int wide = HAS_AVX512; /* (the 3x3 rows then take 16 channels at a time where C allows) */
    for (long i = g[G_I0]; i < g[G_I1]; i++) {
        const long r0 = i * sh - pt;
        float *yrow = y + i * yr;
        if (!(fast && r0 >= 0 && r0 + 2 < h)) {
            for (long j = 0; j < wo; j++) depthwise_pixel(x, g, wt, bias, r0, j * sw - pl, yrow + j * yp, vlo, vhi, lo, hi, wide);
            continue;
        }
        for (long j = 0; j < jl; j++) depthwise_pixel(x, g, wt, bias, r0, j * sw - pl, yrow + j * yp, vlo, vhi, lo, hi, wide);
        for (long j = jh; j < wo; j++) depthwise_pixel(x, g, wt, bias, r0, j * sw - pl, yrow + j * yp, vlo, vhi, lo, hi, wide);
        if (wide && c % 16 == 0)
            depthwise_row_3x3_wide(x + r0 * xr, xr, xp, c, sw, pl, wt, bias, jl, jh, yrow, yp, lo, hi);
        else
            depthwise_row_3x3(x + r0 * xr, xr, xp, c, sw, pl, wt, bias, jl, jh, yrow, yp, lo, hi);
    }
}

/* ---- max pooling ---- */

INLINE float max1(float acc, float v) { return v != v ? v : (v > acc ? v : acc); }

/* y[i, j, :] = max over taps (a, b) inside the image of x[i*sh - pt + a*dh, j*sw - pl + b*dw, :] (padding
 * never wins, as if it were -inf), for output rows g[G_I0] <= i < g[G_I1]; the geometry is the depthwise's. */
CLONES void edgeinfer_max_pool_hwc(const float *x, float *y, const int64_t *g) {
    const long h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const long kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];
    const long pt = g[G_PT], pl = g[G_PL], wo = g[G_WO], yr = g[G_YROW], yp = g[G_YPIX];
    const float lowest = -__builtin_inff();
    for (long i = g[G_I0]; i < g[G_I1]; i++) {
        const long r0 = i * sh - pt;
        long a0 = 0, a1 = kh;
        while (a0 < kh && r0 + a0 * dh < 0) a0++;
        while (a1 > a0 && r0 + (a1 - 1) * dh >= h) a1--;
        for (long j = 0; j < wo; j++) {
            const long q0 = j * sw - pl;
            long b0 = 0, b1 = kw;
            while (b0 < kw && q0 + b0 * dw < 0) b0++;
            while (b1 > b0 && q0 + (b1 - 1) * dw >= w) b1--;
            float *yo = y + i * yr + j * yp;
            long k = 0;
            for (; k + 16 <= c; k += 16) {
                /* NaN wins, as in np.maximum: a tap is NaN where it is not <= inf (GCC scalarises v != v) */
                v16 acc = {0}, inf = {0};
                vi16 nan = {0};
                acc += lowest;
                inf -= lowest;
                for (long a = a0; a < a1; a++)
                    for (long b = b0; b < b1; b++) {
                        const v16 v = LD(x + (r0 + a * dh) * xr + (q0 + b * dw) * xp + k);
                        acc = select16(v > acc, v, acc);
                        nan |= ~(v <= inf);
                    }
                v16 qnan = {0};
                qnan += __builtin_nanf("");
                ST(yo + k, select16(nan, qnan, acc));
            }
            for (; k < c; k++) {
                float acc = lowest;
                for (long a = a0; a < a1; a++)
                    for (long b = b0; b < b1; b++) acc = max1(acc, x[(r0 + a * dh) * xr + (q0 + b * dw) * xp + k]);
                yo[k] = acc;
            }
        }
    }
}

/* ---- the conv epilogue ---- */

typedef uint32_t vu16 __attribute__((vector_size(64)));

/* e^v, Cephes' single-precision polynomial (about 1 ulp); v is clamped to [-87.3, 88.3], so e^v stays a
 * normal float (fine for sigmoid and SiLU, which then round to their limits), and NaN stays NaN. */
INLINE v16 exp16(v16 v) {
    const v16 hi = {0}, lo = {0};
    v = select16(v > hi + 88.3f, hi + 88.3f, v);
    v = select16(v < lo - 87.3f, lo - 87.3f, v);
    v16 fx = v * 1.44269504088896341f + 0.5f;
    v16 n = __builtin_convertvector(__builtin_convertvector(fx, vi16), v16); /* truncates towards zero */
    n = select16(n > fx, n - 1.0f, n);                                           /* floor */
    v16 r = v - n * 0.693359375f + n * 2.12194440e-4f;
    v16 p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vu16 bits = (vu16)(__builtin_convertvector(n, vi16) + 127) << 23; /* 2^n */
    return p * (v16)bits;
}

static inline float exp1(float v) {
    v16 x = {0};
    x += v;
    return exp16(x)[0];
}

/* Activation kinds (ACTIVATION_KINDS in native_kernels.py); a and b are their parameters. */
enum { ACT_CLAMP, ACT_LEAKY_RELU, ACT_HARD_SIGMOID, ACT_HARD_SWISH, ACT_SIGMOID, ACT_SILU };

#define ACT16_CLAMP(v) clamp16(v, va, vb)
#define ACT16_LEAKY_RELU(v) select16((v) < zero, (v) * va, v)
#define ACT16_HARD_SIGMOID(v) clamp16((v) * va + vb, zero, one)
#define ACT16_HARD_SWISH(v) ((v) * clamp16((v) * va + vb, zero, one))
#define ACT16_SIGMOID(v) (one / (one + exp16(-(v))))
/* below -88 e^-v is clamped, so x / (1 + e^-v) would not reach its limit 0: take it */
#define ACT16_SILU(v) select16((v) < zero - 88.0f, (v) * zero, (v) / (one + exp16(-(v))))
#define ACT1_CLAMP(v) clamp1(v, a, b)
#define ACT1_LEAKY_RELU(v) ((v) < 0 ? (v) * a : (v))
#define ACT1_HARD_SIGMOID(v) clamp1((v) * a + b, 0.0f, 1.0f)
#define ACT1_HARD_SWISH(v) ((v) * clamp1((v) * a + b, 0.0f, 1.0f))
#define ACT1_SIGMOID(v) (1.0f / (1.0f + exp1(-(v))))
#define ACT1_SILU(v) ((v) < -88.0f ? (v) * 0.0f : (v) / (1.0f + exp1(-(v))))

/* One loop per activation, so that the activation is not decided per element. */
#define EPILOGUE_LOOP(KIND)                                                  \
    for (long p = 0; p < pixels; p++) {                                      \
        float *yo = y + p * y_row;                                           \
        const float *zo = z ? z + p * z_row : 0;                             \
        long k = 0;                                                          \
        for (; k + 16 <= m; k += 16) {                                       \
            v16 v = LD(yo + k);                                              \
            if (bias) v += LD(bias + k);                                     \
            if (zo) v += LD(zo + k);                                         \
            ST(yo + k, ACT16_##KIND(v));                                     \
        }                                                                    \
        for (; k < m; k++) {                                                 \
            float v = yo[k];                                                 \
            if (bias) v += bias[k];                                          \
            if (zo) v += zo[k];                                              \
            yo[k] = ACT1_##KIND(v);                                          \
        }                                                                    \
    }

/* y[p, :] = act(y[p, :] + bias + z[p, :]) for p < pixels, in place: a Conv's epilogue in one pass.
 * y rows are y_row floats apart, z rows z_row; bias and z may be NULL. ACT_CLAMP with a, b = -inf, inf is
 * no activation. */
CLONES void edgeinfer_epilogue_hwc(float *y, int64_t pixels, int64_t m, int64_t y_row, const float *bias,
                                   const float *z, int64_t z_row, int32_t kind, float a, float b) {
    v16 va = {0}, vb = {0}, zero = {0}, one = {0};
    va += a;
    vb += b;
    one += 1.0f;
    switch (kind) {
    case ACT_LEAKY_RELU: EPILOGUE_LOOP(LEAKY_RELU) break;
    case ACT_HARD_SIGMOID: EPILOGUE_LOOP(HARD_SIGMOID) break;
    case ACT_HARD_SWISH: EPILOGUE_LOOP(HARD_SWISH) break;
    case ACT_SIGMOID: EPILOGUE_LOOP(SIGMOID) break;
    case ACT_SILU: EPILOGUE_LOOP(SILU) break;
    default: EPILOGUE_LOOP(CLAMP) break;
    }
}
