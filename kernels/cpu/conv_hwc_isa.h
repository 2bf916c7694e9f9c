/* The vector kernels of conv_hwc.c for one instruction set. conv_hwc.c includes this file once per ISA it
 * builds (AVX-512, AVX2 and the SSE2 baseline on x86-64; the baseline alone elsewhere, NEON on aarch64), with:
 *
 *   VL         floats per vector: the ISA's native register width (16, 8, 4). Vectors wider than the
 *              target's registers must never appear here: GCC lowers their compares and selects to scalar
 *              code (a 16-wide MaxPool built for AVX2 ran at 0.6 GFLOP/s, a SiLU epilogue at 12 ns a float).
 *   ISA(name)  name with the ISA's suffix
 *   TARGET     the function attribute that compiles for the ISA (empty for the baseline)
 *   DW_PIXELS  output pixels per iteration of the 3x3 depthwise rows: 9 weights + DW_PIXELS accumulators and
 *              their loads must fit the registers (AVX-512's 32, AVX2's and SSE's 16)
 *
 * Everything here is static: conv_hwc.c checks the arguments and calls these through its dispatcher, giving
 * each kernel a channel count the ISA's width divides (the baseline also takes a scalar tail).
 */

typedef float ISA(vf) __attribute__((vector_size(VL * 4)));
typedef int32_t ISA(vi) __attribute__((vector_size(VL * 4)));
typedef uint32_t ISA(vu) __attribute__((vector_size(VL * 4)));
typedef float ISA(vfu) __attribute__((vector_size(VL * 4), aligned(4))); /* unaligned loads and stores */
#define VF ISA(vf)
#define VI ISA(vi)
#define VU ISA(vu)
#define LDV(p) (*(const ISA(vfu) *)(p))
#define STV(p, v) (*(ISA(vfu) *)(p) = (v))
#define FN static inline __attribute__((always_inline)) TARGET
#define KERNEL static TARGET

FN VF ISA(splat)(float v) {
    VF r = {0};
    return r + v;
}

FN VF ISA(select)(VI mask, VF a, VF b) { return (VF)(((VI)a & mask) | ((VI)b & ~mask)); }

/* Primitives where a plain vector expression costs more than the instruction: generic forms, replaced by the
 * x86 or NEON instruction where there is one. The selects the generic forms compile to are two or three
 * instructions each on AVX2 (vcmpps + vblendvps) and three on SSE2 (and, andnot, or). */
#if defined(__x86_64__) && VL == 16
#define X86_PS(op) _mm512_##op##_ps
#define X86_V __m512
#elif defined(__x86_64__) && VL == 8
#define X86_PS(op) _mm256_##op##_ps
#define X86_V __m256
#elif defined(__x86_64__) && VL == 4
#define X86_PS(op) _mm_##op##_ps
#define X86_V __m128
#endif

/* max(bound, v), NaN v kept (x86's max returns its second operand when either is NaN; NEON's returns NaN) */
FN VF ISA(at_least)(VF bound, VF v) {
#if defined(X86_PS)
    return (VF)X86_PS(max)((X86_V)bound, (X86_V)v);
#elif defined(__aarch64__) && VL == 4
    return (VF)vmaxq_f32((float32x4_t)bound, (float32x4_t)v);
#else
    return ISA(select)(v < bound, bound, v);
#endif
}

/* min(bound, v), NaN v kept */
FN VF ISA(at_most)(VF bound, VF v) {
#if defined(X86_PS)
    return (VF)X86_PS(min)((X86_V)bound, (X86_V)v);
#elif defined(__aarch64__) && VL == 4
    return (VF)vminq_f32((float32x4_t)bound, (float32x4_t)v);
#else
    return ISA(select)(v > bound, bound, v);
#endif
}

/* max(acc, v) for ordered lanes; a NaN lane gives either (callers track NaN apart) */
FN VF ISA(max_ordered)(VF acc, VF v) {
#if defined(X86_PS)
    return (VF)X86_PS(max)((X86_V)acc, (X86_V)v);
#elif defined(__aarch64__) && VL == 4
    return (VF)vmaxq_f32((float32x4_t)acc, (float32x4_t)v);
#else
    return ISA(select)(v > acc, v, acc);
#endif
}

/* 1 / d for 1 <= d <= 2^125: a reciprocal estimate and Newton steps (about 2^-23 relative) where division is
 * slow (one 16-wide vdivps takes 16 cycles on Sapphire Rapids), else the division. The step is r * (2 - d * r),
 * not r + r * (1 - d * r), whose correction term is denormal for d above 2^100. */
FN VF ISA(reciprocal)(VF d) {
#if defined(__x86_64__) && VL == 16
    VF r = (VF)_mm512_rcp14_ps((__m512)d); /* 2^-14 */
    return r * (2.0f - d * r);
#elif defined(X86_PS)
    VF r = (VF)X86_PS(rcp)((X86_V)d); /* 2^-12 */
    return r * (2.0f - d * r);
#elif defined(__aarch64__) && VL == 4
    float32x4_t e = vrecpeq_f32((float32x4_t)d); /* 2^-8 */
    e = vmulq_f32(e, vrecpsq_f32((float32x4_t)d, e));
    return (VF)vmulq_f32(e, vrecpsq_f32((float32x4_t)d, e));
#else
    return 1.0f / d;
#endif
}

/* whether any lane of v is NaN or infinite */
FN int ISA(any_nonfinite)(VF v) {
    const VF d = v - v; /* 0 where v is finite, NaN elsewhere */
#if defined(__x86_64__) && VL == 16
    return _mm512_cmp_ps_mask((__m512)d, (__m512)d, _CMP_UNORD_Q) != 0;
#elif defined(__x86_64__) && VL == 8
    return _mm256_movemask_ps(_mm256_cmp_ps((__m256)d, (__m256)d, _CMP_UNORD_Q)) != 0;
#elif defined(__x86_64__) && VL == 4
    return _mm_movemask_ps(_mm_cmpunord_ps((__m128)d, (__m128)d)) != 0;
#elif defined(__aarch64__) && VL == 4
    return vminvq_u32(vceqq_f32((float32x4_t)d, (float32x4_t)d)) == 0;
#else
    for (int i = 0; i < VL; i++)
        if (d[i] != d[i]) return 1;
    return 0;
#endif
}

#undef X86_PS
#undef X86_V

/* min(max(v, lo), hi), NaN kept as np.clip keeps it */
FN VF ISA(clamp)(VF v, VF lo, VF hi) { return ISA(at_most)(hi, ISA(at_least)(lo, v)); }

/* e^v for sigmoid and SiLU, Cephes' single-precision polynomial (about 1 ulp); v is clamped to [-86, 86], where
 * they have reached their limits to float precision, so that e^v and 1 / (1 + e^v) stay normal floats: an
 * operation on a denormal float costs a microcode assist of ~100 cycles (with [-87.3, 88.3], YOLOX's Conv_59,
 * whose SiLU inputs reach -400, ran 6x slower). NaN stays NaN.
 * Written for a short dependency chain, which bounds its speed (an out-of-order core holds only a few
 * iterations of a long one: Horner's form took 25 cycles per SSE vector): the nearest integer n to
 * v * log2(e) comes from adding 1.5 * 2^23, which leaves it in the low mantissa bits (no conversion, no
 * floor), and the polynomial is evaluated in Estrin's form (depth 3 instead of 6). */
FN VF ISA(exp)(VF v) {
    const VF magic = ISA(splat)(12582912.0f);
    v = ISA(clamp)(v, ISA(splat)(-86.0f), ISA(splat)(86.0f));
    const VF t = v * 1.44269504088896341f + magic;
    const VF n = t - magic;
    const VF r = v - n * 0.693359375f + n * 2.12194440e-4f;
    const VF r2 = r * r;
    const VF p45 = 1.9875691500e-4f * r + 1.3981999507e-3f, p23 = 8.3334519073e-3f * r + 4.1665795894e-2f;
    const VF p01 = 1.6666665459e-1f * r + 5.0000001201e-1f;
    const VF p = (p45 * r2 + p23) * r2 + p01;
    const VU bits = ((VU)t - (VU)magic + 127) << 23; /* 2^n */
    return (p * r2 + (r + 1.0f)) * (VF)bits;
}

/* The activation kinds (enum ACT_* in conv_hwc.c) on a vector; a, b are their parameters. */
FN VF ISA(activate)(int kind, VF v, VF a, VF b) {
    const VF zero = ISA(splat)(0.0f), one = ISA(splat)(1.0f);
    switch (kind) {
    case ACT_LEAKY_RELU: return ISA(select)(v < zero, v * a, v);
    case ACT_HARD_SIGMOID: return ISA(clamp)(v * a + b, zero, one);
    case ACT_HARD_SWISH: return v * ISA(clamp)(v * a + b, zero, one);
    case ACT_SIGMOID: return ISA(reciprocal)(one + ISA(exp)(-v));
    /* below -88 e^-v is clamped, so v / (1 + e^-v) would not reach its limit 0 (to float precision): take it */
    case ACT_SILU: return ISA(select)(v < -88.0f, v * zero, v * ISA(reciprocal)(one + ISA(exp)(-v)));
    case ACT_IDENTITY: return v;
    default: return ISA(clamp)(v, a, b);
    }
}

/* ---- the conv epilogue ---- */

/* One loop per activation (KIND a constant after inlining), so that the kind is not decided per vector.
 * m % VL floats at the end of a row (the baseline's only) go through a vector staged on the stack, so every
 * element takes the same arithmetic. */
FN void ISA(epilogue_loop)(int kind, float *y, int64_t pixels, int64_t m, int64_t y_row, const float *bias,
                           const float *z, int64_t z_row, float a, float b) {
    const VF va = ISA(splat)(a), vb = ISA(splat)(b);
    for (int64_t p = 0; p < pixels; p++) {
        float *yo = y + p * y_row;
        const float *zo = z ? z + p * z_row : 0;
        int64_t k = 0;
        for (; k + VL <= m; k += VL) {
            VF v = LDV(yo + k);
            if (bias) v += LDV(bias + k);
            if (zo) v += LDV(zo + k);
            STV(yo + k, ISA(activate)(kind, v, va, vb));
        }
        if (k < m) {
            float stage[VL] = {0};
            for (int64_t i = k; i < m; i++)
                stage[i - k] = yo[i] + (bias ? bias[i] : 0.0f) + (zo ? zo[i] : 0.0f);
            VF v = ISA(activate)(kind, LDV(stage), va, vb);
            STV(stage, v);
            for (int64_t i = k; i < m; i++) yo[i] = stage[i - k];
        }
    }
}

KERNEL void ISA(epilogue)(float *y, int64_t pixels, int64_t m, int64_t y_row, const float *bias, const float *z,
                          int64_t z_row, int kind, float a, float b) {
    switch (kind) {
    case ACT_LEAKY_RELU: ISA(epilogue_loop)(ACT_LEAKY_RELU, y, pixels, m, y_row, bias, z, z_row, a, b); break;
    case ACT_HARD_SIGMOID: ISA(epilogue_loop)(ACT_HARD_SIGMOID, y, pixels, m, y_row, bias, z, z_row, a, b); break;
    case ACT_HARD_SWISH: ISA(epilogue_loop)(ACT_HARD_SWISH, y, pixels, m, y_row, bias, z, z_row, a, b); break;
    case ACT_SIGMOID: ISA(epilogue_loop)(ACT_SIGMOID, y, pixels, m, y_row, bias, z, z_row, a, b); break;
    case ACT_SILU: ISA(epilogue_loop)(ACT_SILU, y, pixels, m, y_row, bias, z, z_row, a, b); break;
    case ACT_IDENTITY: ISA(epilogue_loop)(ACT_IDENTITY, y, pixels, m, y_row, bias, z, z_row, a, b); break;
    default: ISA(epilogue_loop)(ACT_CLAMP, y, pixels, m, y_row, bias, z, z_row, a, b); break;
    }
}

/* ---- depthwise conv ---- */

/* One output pixel, any window: taps outside the image are skipped (zero padding); [lo, hi] clamps. */
FN void ISA(depthwise_pixel)(const float *x, const int64_t *g, const float *wt, int64_t ws, const float *bias,
                             int64_t r0, int64_t q0, float *yo, VF vlo, VF vhi, float lo, float hi) {
    const int64_t h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const int64_t kh = g[G_KH], kw = g[G_KW], dh = g[G_DH], dw = g[G_DW];
    int64_t a0 = 0, a1 = kh, b0 = 0, b1 = kw;
    while (a0 < kh && r0 + a0 * dh < 0) a0++;
    while (a1 > a0 && r0 + (a1 - 1) * dh >= h) a1--;
    while (b0 < kw && q0 + b0 * dw < 0) b0++;
    while (b1 > b0 && q0 + (b1 - 1) * dw >= w) b1--;
    int64_t k = 0;
    for (; k + VL <= c; k += VL) {
        VF acc = {0};
        if (bias) acc = LDV(bias + k);
        for (int64_t a = a0; a < a1; a++) {
            const float *xa = x + (r0 + a * dh) * xr + (q0 + b0 * dw) * xp + k, *wa = wt + (a * kw + b0) * ws + k;
            for (int64_t b = b0; b < b1; b++, xa += dw * xp, wa += ws) acc += LDV(xa) * LDV(wa);
        }
        STV(yo + k, ISA(clamp)(acc, vlo, vhi));
    }
    for (; k < c; k++) { /* the baseline's channel tail */
        float acc = bias ? bias[k] : 0.0f;
        for (int64_t a = a0; a < a1; a++)
            for (int64_t b = b0; b < b1; b++)
                acc += x[(r0 + a * dh) * xr + (q0 + b * dw) * xp + k] * wt[(a * kw + b) * ws + k];
        yo[k] = clamp1(acc, lo, hi);
    }
}

/* One output pixel of a 3x3 window inside the image, VL channels; q: the offset of its top-left tap */
#define DW_TAPS3x3(q)                                                                                         \
    (bv + LDV(x0 + (q)) * w00 + LDV(x0 + (q) + xp) * w01 + LDV(x0 + (q) + 2 * xp) * w02 + LDV(x1 + (q)) * w10 + \
     LDV(x1 + (q) + xp) * w11 + LDV(x1 + (q) + 2 * xp) * w12 + LDV(x2 + (q)) * w20 + LDV(x2 + (q) + xp) * w21 +  \
     LDV(x2 + (q) + 2 * xp) * w22)

/* The pixels jl <= j < jh of one output row whose 3x3 window lies inside the image, VL channels at a time with
 * the nine weight vectors held in registers and DW_PIXELS pixels in flight. */
FN void ISA(depthwise_row_3x3)(const float *x0, int64_t xr, int64_t xp, int64_t c, int64_t sw, int64_t pl,
                               const float *wt, int64_t ws, const float *bias, int64_t jl, int64_t jh, float *yrow,
                               int64_t yp, VF vlo, VF vhi) {
    const float *x1 = x0 + xr, *x2 = x1 + xr;
    const int64_t step = sw * xp;
    for (int64_t c0 = 0; c0 + VL <= c; c0 += VL) {
        const VF w00 = LDV(wt + 0 * ws + c0), w01 = LDV(wt + 1 * ws + c0), w02 = LDV(wt + 2 * ws + c0);
        const VF w10 = LDV(wt + 3 * ws + c0), w11 = LDV(wt + 4 * ws + c0), w12 = LDV(wt + 5 * ws + c0);
        const VF w20 = LDV(wt + 6 * ws + c0), w21 = LDV(wt + 7 * ws + c0), w22 = LDV(wt + 8 * ws + c0);
        VF bv = {0};
        if (bias) bv = LDV(bias + c0);
        int64_t j = jl;
        for (; j + DW_PIXELS <= jh; j += DW_PIXELS) {
            const int64_t q = (j * sw - pl) * xp + c0;
            VF s[DW_PIXELS];
            for (int p = 0; p < DW_PIXELS; p++) s[p] = DW_TAPS3x3(q + p * step);
            for (int p = 0; p < DW_PIXELS; p++) STV(yrow + (j + p) * yp + c0, ISA(clamp)(s[p], vlo, vhi));
        }
        for (; j < jh; j++) STV(yrow + j * yp + c0, ISA(clamp)(DW_TAPS3x3((j * sw - pl) * xp + c0), vlo, vhi));
    }
}

/* The same for any window (5x5, dilated...): the pixels jl <= j < jh of a row whose window lies inside the image,
 * DW_ANY_PIXELS at a time sharing each weight load (a pixel at a time took two loads per multiply-add). */
#define DW_ANY_PIXELS 4
FN void ISA(depthwise_row_any)(const float *x0, const int64_t *g, int64_t c, const float *wt, int64_t ws,
                               const float *bias, int64_t jl, int64_t jh, float *yrow, VF vlo, VF vhi) {
    const int64_t xr = g[G_XROW], xp = g[G_XPIX], kh = g[G_KH], kw = g[G_KW], dh = g[G_DH], dw = g[G_DW];
    const int64_t sw = g[G_SW], pl = g[G_PL], yp = g[G_YPIX];
    for (int64_t c0 = 0; c0 + VL <= c; c0 += VL) {
        VF bv = {0};
        if (bias) bv = LDV(bias + c0);
        int64_t j = jl;
        for (; j + DW_ANY_PIXELS <= jh; j += DW_ANY_PIXELS) {
            VF acc[DW_ANY_PIXELS];
            for (int p = 0; p < DW_ANY_PIXELS; p++) acc[p] = bv;
            for (int64_t a = 0; a < kh; a++) {
                const float *xa = x0 + a * dh * xr + (j * sw - pl) * xp + c0, *wa = wt + a * kw * ws + c0;
                for (int64_t b = 0; b < kw; b++, xa += dw * xp, wa += ws) {
                    const VF wv = LDV(wa);
                    for (int p = 0; p < DW_ANY_PIXELS; p++) acc[p] += LDV(xa + p * sw * xp) * wv;
                }
            }
            for (int p = 0; p < DW_ANY_PIXELS; p++) STV(yrow + (j + p) * yp + c0, ISA(clamp)(acc[p], vlo, vhi));
        }
        for (; j < jh; j++) {
            VF acc = bv;
            for (int64_t a = 0; a < kh; a++) {
                const float *xa = x0 + a * dh * xr + (j * sw - pl) * xp + c0, *wa = wt + a * kw * ws + c0;
                for (int64_t b = 0; b < kw; b++, xa += dw * xp, wa += ws) acc += LDV(xa) * LDV(wa);
            }
            STV(yrow + j * yp + c0, ISA(clamp)(acc, vlo, vhi));
        }
    }
}

/* y[i, j, :] = act(bias + sum over taps (a, b) of x[i*sh - pt + a*dh, j*sw - pl + b*dw, :] * w[a, b, :]) for
 * the output rows g[G_I0] <= i < g[G_I1]; x outside the image reads as zero. w is (kh, kw, ws) with the
 * kernel's c channels first in each ws. A clamp (none, ReLU, Clip) runs on the way out; other activations
 * run over each finished output row while it is in cache. */
KERNEL void ISA(depthwise)(const float *x, const float *wt, int64_t ws, const float *bias, float *y,
                           const int64_t *g, int kind, float a, float b) {
    const int64_t h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const int64_t kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];
    const int64_t pt = g[G_PT], pl = g[G_PL], wo = g[G_WO], yr = g[G_YROW], yp = g[G_YPIX];
    const int clamp_only = kind == ACT_CLAMP;
    const float lo = clamp_only ? a : -__builtin_inff(), hi = clamp_only ? b : __builtin_inff();
    const VF vlo = ISA(splat)(lo), vhi = ISA(splat)(hi);
    /* output columns whose window lies inside the row: jl <= j < jh */
    int64_t jl = 0, jh = wo;
    while (jl < wo && jl * sw - pl < 0) jl++;
    while (jh > jl && (jh - 1) * sw - pl + (kw - 1) * dw >= w) jh--;
    const int fast = kh == 3 && kw == 3 && dh == 1 && dw == 1;
    for (int64_t i = g[G_I0]; i < g[G_I1]; i++) {
        const int64_t r0 = i * sh - pt;
        float *yrow = y + i * yr;
        if (r0 >= 0 && r0 + (kh - 1) * dh < h) { /* the window's rows inside the image */
            for (int64_t j = 0; j < jl; j++)
                ISA(depthwise_pixel)(x, g, wt, ws, bias, r0, j * sw - pl, yrow + j * yp, vlo, vhi, lo, hi);
            for (int64_t j = jh; j < wo; j++)
                ISA(depthwise_pixel)(x, g, wt, ws, bias, r0, j * sw - pl, yrow + j * yp, vlo, vhi, lo, hi);
            if (fast)
                ISA(depthwise_row_3x3)(x + r0 * xr, xr, xp, c, sw, pl, wt, ws, bias, jl, jh, yrow, yp, vlo, vhi);
            else
                ISA(depthwise_row_any)(x + r0 * xr, g, c, wt, ws, bias, jl, jh, yrow, vlo, vhi);
            if (c % VL) /* the baseline's channel tail */
                for (int64_t j = jl; j < jh; j++)
                    ISA(depthwise_pixel)(x, g, wt, ws, bias, r0, j * sw - pl, yrow + j * yp, vlo, vhi, lo, hi);
        } else {
            for (int64_t j = 0; j < wo; j++)
                ISA(depthwise_pixel)(x, g, wt, ws, bias, r0, j * sw - pl, yrow + j * yp, vlo, vhi, lo, hi);
        }
        if (!clamp_only) { /* (contiguous pixels as one row: no loop per pixel) */
            if (yp == c)
                ISA(epilogue)(yrow, 1, wo * c, wo * c, 0, 0, 0, kind, a, b);
            else
                ISA(epilogue)(yrow, wo, c, yp, 0, 0, 0, kind, a, b);
        }
    }
}

/* ---- max pooling ---- */

/* acc = max(acc, v) where v is a tap; nan collects lanes where a tap was NaN (NaN wins, as in np.maximum).
 * The NaN test is !(v <= inf): GCC scalarises v != v on vectors. */
#define MAX_TAP(acc, nan, v)                  \
    do {                                      \
        const VF v_ = (v);                    \
        acc = ISA(max_ordered)(acc, v_);      \
        nan |= ~(v_ <= inf);                  \
    } while (0)

FN float ISA(max1)(float acc, float v) { return v != v ? v : (v > acc ? v : acc); }

/* Output columns per tile, a multiple of `group`, such that a tile's input (about `floats_per_column` floats per
 * output column) fits in half a 32 KiB L1 cache: channel blocks then sweep the tile, not whole image rows, and
 * every sweep but the first reads from L1 (SqueezeNet's 111x111x64 pool: three input rows are 85 KiB). */
FN int64_t ISA(column_tile)(int64_t floats_per_column, int64_t group) {
    int64_t tile = 4096 / (floats_per_column > 0 ? floats_per_column : 1);
    tile -= tile % group;
    return tile > group ? tile : group;
}

/* Tap loops keep POOL_OUTS outputs in flight (independent max chains): with one, each output waited on its
 * chain of kh * kw dependent max operations and SSE lost to NumPy. */
#define POOL_OUTS 4

/* One output pixel whose window may cross the image's edges: taps [a0, a1) x [b0, b1) inside, any channels. */
FN void ISA(max_pool_pixel)(const float *x, const int64_t *g, int64_t r0, int64_t a0, int64_t a1, int64_t q0,
                            float *yo) {
    const int64_t w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX], kw = g[G_KW], dh = g[G_DH], dw = g[G_DW];
    const VF lowest = ISA(splat)(-__builtin_inff()), inf = ISA(splat)(__builtin_inff());
    const VF qnan = ISA(splat)(__builtin_nanf(""));
    int64_t b0 = 0, b1 = kw;
    while (b0 < kw && q0 + b0 * dw < 0) b0++;
    while (b1 > b0 && q0 + (b1 - 1) * dw >= w) b1--;
    int64_t k = 0;
    for (; k + VL <= c; k += VL) {
        VF acc = lowest;
        VI nan = {0};
        for (int64_t a = a0; a < a1; a++) {
            const float *xa = x + (r0 + a * dh) * xr + (q0 + b0 * dw) * xp + k;
            for (int64_t b = b0; b < b1; b++, xa += dw * xp) MAX_TAP(acc, nan, LDV(xa));
        }
        STV(yo + k, ISA(select)(nan, qnan, acc));
    }
    for (; k < c; k++) { /* the baseline's channel tail */
        float acc = -__builtin_inff();
        for (int64_t a = a0; a < a1; a++)
            for (int64_t b = b0; b < b1; b++) acc = ISA(max1)(acc, x[(r0 + a * dh) * xr + (q0 + b * dw) * xp + k]);
        yo[k] = acc;
    }
}

/* POOL_OUTS outputs (VL channels each) at src + o * step, each the max over taps src + o * step + t * tap_step
 * for t < taps; dst + o * dst_step receives them. */
FN void ISA(max_outs)(const float *src, int64_t step, int64_t taps, int64_t tap_step, float *dst, int64_t dst_step) {
    const VF lowest = ISA(splat)(-__builtin_inff()), inf = ISA(splat)(__builtin_inff());
    const VF qnan = ISA(splat)(__builtin_nanf(""));
    VF acc[POOL_OUTS];
    VI nan[POOL_OUTS];
    for (int o = 0; o < POOL_OUTS; o++) acc[o] = lowest, nan[o] = (VI){0};
    for (int64_t t = 0; t < taps; t++, src += tap_step)
        for (int o = 0; o < POOL_OUTS; o++) MAX_TAP(acc[o], nan[o], LDV(src + o * step));
    for (int o = 0; o < POOL_OUTS; o++) STV(dst + o * dst_step, ISA(select)(nan[o], qnan, acc[o]));
}

/* POOL_OUTS outputs of a 3-wide stride-2 window (SqueezeNet's, ResNet's pools), VL channels: their 9 input
 * columns' maxima over rows a0..a1 held in registers (9 column loads per row where the taps are 12), each output
 * the max of three; NaN detection is a running sum checked once (a NaN or an infinity anywhere makes it
 * non-finite: then 0 is returned and the caller takes the tracked path). */
FN int ISA(max_group_3s2)(const float *xa, int64_t rows, int64_t row_step, int64_t xp, float *yo, int64_t yp) {
    VF col[2 * POOL_OUTS + 1], sum0 = {0}, sum1 = {0};
    for (int q = 0; q < 2 * POOL_OUTS + 1; q++) col[q] = LDV(xa + q * xp);
    for (int q = 0; q < 2 * POOL_OUTS + 1; q += 2) sum0 += col[q];
    for (int q = 1; q < 2 * POOL_OUTS + 1; q += 2) sum1 += col[q];
    for (int64_t a = 1; a < rows; a++) {
        const float *xr = xa + a * row_step;
        for (int q = 0; q < 2 * POOL_OUTS + 1; q++) {
            const VF v = LDV(xr + q * xp);
            col[q] = ISA(max_ordered)(col[q], v);
            if (q % 2) sum1 += v;
            else sum0 += v;
        }
    }
    if (ISA(any_nonfinite)(sum0 + sum1)) return 0;
    for (int o = 0; o < POOL_OUTS; o++)
        STV(yo + o * yp, ISA(max_ordered)(ISA(max_ordered)(col[2 * o], col[2 * o + 1]), col[2 * o + 2]));
    return 1;
}

/* The direct form: every output pixel takes the maximum over its whole window (small windows, strides > 1).
 * Outputs whose window lies inside the row go POOL_OUTS at a time, their taps' rows in the outer loop. */
FN void ISA(max_pool_direct)(const float *x, float *y, const int64_t *g) {
    const int64_t h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const int64_t kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];
    const int64_t pt = g[G_PT], pl = g[G_PL], wo = g[G_WO], yr = g[G_YROW], yp = g[G_YPIX];
    const VF lowest = ISA(splat)(-__builtin_inff()), inf = ISA(splat)(__builtin_inff());
    const VF qnan = ISA(splat)(__builtin_nanf(""));
    int64_t jl = 0, jh = wo; /* output columns whose window lies inside the row */
    while (jl < wo && jl * sw - pl < 0) jl++;
    while (jh > jl && (jh - 1) * sw - pl + (kw - 1) * dw >= w) jh--;
    /* interior outputs in groups (all but the baseline's odd channel counts); the rest one at a time */
    const int64_t j_end = c % VL ? jl : jl + (jh - jl) / POOL_OUTS * POOL_OUTS;
    const int64_t tile = ISA(column_tile)(kh * sw * c, POOL_OUTS);
    const int s3 = kw == 3 && sw == 2 && dw == 1;
    for (int64_t i = g[G_I0]; i < g[G_I1]; i++) {
        const int64_t r0 = i * sh - pt;
        int64_t a0 = 0, a1 = kh;
        while (a0 < kh && r0 + a0 * dh < 0) a0++;
        while (a1 > a0 && r0 + (a1 - 1) * dh >= h) a1--;
        float *yrow = y + i * yr;
        for (int64_t t0 = jl; t0 < j_end; t0 += tile) /* column tiles, channel blocks within each */
            for (int64_t k = 0, t1 = t0 + tile < j_end ? t0 + tile : j_end; k + VL <= c; k += VL)
            for (int64_t j = t0; j < t1; j += POOL_OUTS) {
                if (s3 && a1 > a0 &&
                    ISA(max_group_3s2)(x + (r0 + a0 * dh) * xr + (j * sw - pl) * xp + k, a1 - a0, dh * xr, xp,
                                       yrow + j * yp + k, yp))
                    continue;
                VF acc[POOL_OUTS];
                VI nan[POOL_OUTS];
                for (int o = 0; o < POOL_OUTS; o++) acc[o] = lowest, nan[o] = (VI){0};
                for (int64_t a = a0; a < a1; a++) {
                    const float *xa = x + (r0 + a * dh) * xr + (j * sw - pl) * xp + k;
                    for (int64_t b = 0; b < kw; b++, xa += dw * xp)
                        for (int o = 0; o < POOL_OUTS; o++) MAX_TAP(acc[o], nan[o], LDV(xa + o * sw * xp));
                }
                for (int o = 0; o < POOL_OUTS; o++) STV(yrow + (j + o) * yp + k, ISA(select)(nan[o], qnan, acc[o]));
            }
        for (int64_t j = 0; j < wo; j++)
            if (j < jl || j >= j_end) ISA(max_pool_pixel)(x, g, r0, a0, a1, j * sw - pl, yrow + j * yp);
    }
}

/* The separable form for large windows (YOLOX's SPP: 5x5, 9x9, 13x13 at stride 1): per output row, the
 * maximum down each kernel column into col (one entry of VL channels per input column), then along each kernel
 * row: kh + kw taps per output instead of kh * kw. Exact: max is associative, and NaN sticks in both passes.
 * col holds w * VL floats; c % VL == 0. */
FN void ISA(max_pool_separable)(const float *x, float *y, const int64_t *g, float *col) {
    const int64_t h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const int64_t kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];
    const int64_t pt = g[G_PT], pl = g[G_PL], wo = g[G_WO], yr = g[G_YROW], yp = g[G_YPIX];
    /* input columns some window reads: q < q_last (pl >= 0, so the first window starts at or left of 0) */
    const int64_t q_end = (wo - 1) * sw - pl + (kw - 1) * dw + 1, q_last = q_end < w ? q_end : w;
    int64_t jl = 0, jh = wo; /* output columns whose window lies inside the row */
    while (jl < wo && jl * sw - pl < 0) jl++;
    while (jh > jl && (jh - 1) * sw - pl + (kw - 1) * dw >= w) jh--;
    for (int64_t i = g[G_I0]; i < g[G_I1]; i++) {
        const int64_t r0 = i * sh - pt;
        int64_t a0 = 0, a1 = kh;
        while (a0 < kh && r0 + a0 * dh < 0) a0++;
        while (a1 > a0 && r0 + (a1 - 1) * dh >= h) a1--;
        for (int64_t k = 0; k + VL <= c; k += VL) {
            /* down the columns; a NaN is kept as NaN in col, so the second pass sees it */
            const float *xq = x + (r0 + a0 * dh) * xr + k;
            int64_t q = 0;
            for (; q + POOL_OUTS <= q_last; q += POOL_OUTS)
                ISA(max_outs)(xq + q * xp, xp, a1 - a0, dh * xr, col + q * VL, VL);
            for (; q < q_last; q++) {
                const VF lowest = ISA(splat)(-__builtin_inff()), inf = ISA(splat)(__builtin_inff());
                VF acc = lowest;
                VI nan = {0};
                for (int64_t a = a0; a < a1; a++) MAX_TAP(acc, nan, LDV(xq + (a - a0) * dh * xr + q * xp));
                STV(col + q * VL, ISA(select)(nan, ISA(splat)(__builtin_nanf("")), acc));
            }
            /* along the rows: the edge outputs with their clipped taps, the interior POOL_OUTS at a time */
            float *yk = y + i * yr + k;
            int64_t j = jl;
            for (; j + POOL_OUTS <= jh; j += POOL_OUTS)
                ISA(max_outs)(col + (j * sw - pl) * VL, sw * VL, kw, dw * VL, yk + j * yp, yp);
            for (int64_t e = 0; e < wo; e++) {
                if (e >= jl && e < j) continue;
                const int64_t q0 = e * sw - pl;
                int64_t b0 = 0, b1 = kw;
                while (b0 < kw && q0 + b0 * dw < 0) b0++;
                while (b1 > b0 && q0 + (b1 - 1) * dw >= w) b1--;
                const VF lowest = ISA(splat)(-__builtin_inff()), inf = ISA(splat)(__builtin_inff());
                VF acc = lowest;
                VI nan = {0};
                for (int64_t b = b0; b < b1; b++) MAX_TAP(acc, nan, LDV(col + (q0 + b * dw) * VL));
                STV(yk + e * yp, ISA(select)(nan, ISA(splat)(__builtin_nanf("")), acc));
            }
        }
    }
}

/* y[i, j, :] = max over taps (a, b) inside the image of x[i*sh - pt + a*dh, j*sw - pl + b*dw, :] (padding
 * never wins, as if it were -inf), for output rows g[G_I0] <= i < g[G_I1]; the geometry is the depthwise's.
 * col: w * VL floats of scratch for the separable form, or NULL for the direct one. */
KERNEL void ISA(max_pool)(const float *x, float *y, const int64_t *g, float *col) {
    if (col && g[G_C] % VL == 0)
        ISA(max_pool_separable)(x, y, g, col);
    else
        ISA(max_pool_direct)(x, y, g);
}

#undef VF
#undef VI
#undef VU
#undef LDV
#undef STV
#undef FN
#undef KERNEL
#undef DW_TAPS3x3
#undef MAX_TAP
