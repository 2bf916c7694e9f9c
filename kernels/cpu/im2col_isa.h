/* The im2col of conv_hwc.c for one instruction set, included once per ISA build after conv_hwc_isa.h (with its VL,
 * ISA(name) and TARGET): the patch gather that feeds a group-1 convolution's sgemm.
 *
 * NumPy gathers the patches through a padded copy of the input and a strided copy whose inner loop is one kernel
 * row of one pixel (48 floats in SqueezeNet's 16-channel fire modules): ~0.9 ms of SqueezeNet's run. Here each
 * kernel row of a pixel is one copy straight from the unpadded input, and padding is written as zeros.
 *
 * Column t of output pixel (i, j) is cols[(i - i0) * yrow + j * ypix + t * ct], with t ordered
 *   tap-major      (kernel row, kernel column, channel): the NHWC im2col, pixel rows of contiguous columns
 *   channel-major  (channel, kernel row, kernel column): the NCHW stem's, rows of Ho * Wo pixels
 * and a last column of ones where `ones` (the bias rides through the sgemm). x[r, q, k] is x[r * xr + q * xp + k * xc].
 * conv_hwc.c checked that every index lies in its buffer (check_im2col). */

/* n floats from src (stride xc) to dst (stride ct) */
static inline __attribute__((always_inline)) TARGET void ISA(im2col_copy)(float *dst, int64_t ct, const float *src,
                                                                          int64_t xc, int64_t n) {
    if (ct == 1 && xc == 1)
        for (int64_t k = 0; k < n; k++) dst[k] = src[k];
    else
        for (int64_t k = 0; k < n; k++) dst[k * ct] = src[k * xc];
}

/* n floats from every other float of src to dst (the channel-major rows of a stride-2 conv: the stems): two vector
 * loads and a shuffle per VL outputs where the loads stay before src's last float */
#if VL == 16
#define IM2COL_EVEN 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#elif VL == 8
#define IM2COL_EVEN 0, 2, 4, 6, 8, 10, 12, 14
#else
#define IM2COL_EVEN 0, 2, 4, 6
#endif
static inline __attribute__((always_inline)) TARGET void ISA(im2col_copy_even)(float *dst, const float *src, int64_t n) {
    typedef float vfu __attribute__((vector_size(VL * 4), aligned(4)));
    int64_t j = 0;
    for (; j + VL < n; j += VL) { /* (reads src[2 * j] .. src[2 * (j + VL) - 1], before src[2 * (n - 1)]) */
        const ISA(vf) lo = *(const vfu *)(src + 2 * j), hi = *(const vfu *)(src + 2 * j + VL);
#if defined(__clang__)
        *(vfu *)(dst + j) = __builtin_shufflevector(lo, hi, IM2COL_EVEN);
#else
        *(vfu *)(dst + j) = __builtin_shuffle(lo, hi, (ISA(vi)){IM2COL_EVEN});
#endif
    }
    for (; j < n; j++) dst[j] = src[2 * j];
}
#undef IM2COL_EVEN

/* n floats of v to dst (stride ct) */
static inline __attribute__((always_inline)) TARGET void ISA(im2col_fill)(float *dst, int64_t ct, int64_t n, float v) {
    for (int64_t k = 0; k < n; k++) dst[k * ct] = v;
}

/* Tap-major columns: per pixel, each kernel row is one copy of kw * C floats where the window's row lies inside the
 * image and the pixels are contiguous (xp == C, dw == 1), else a copy or zeros per tap. */
static TARGET void ISA(im2col_tap_major)(const float *x, int64_t xc, float *cols, int64_t ct, const int64_t *g) {
    const int64_t h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const int64_t kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];
    const int64_t pt = g[G_PT], pl = g[G_PL], wo = g[G_WO], yr = g[G_YROW], yp = g[G_YPIX], i0 = g[G_I0];
    const int whole_rows = xc == 1 && xp == c && dw == 1;
    for (int64_t i = i0; i < g[G_I1]; i++) {
        for (int64_t j = 0; j < wo; j++) {
            float *d = cols + (i - i0) * yr + j * yp;
            const int64_t q0 = j * sw - pl;
            const int inside_w = q0 >= 0 && q0 + (kw - 1) * dw < w;
            for (int64_t a = 0; a < kh; a++, d += kw * c * ct) {
                const int64_t r = i * sh - pt + a * dh;
                if (r < 0 || r >= h) {
                    ISA(im2col_fill)(d, ct, kw * c, 0.0f);
                    continue;
                }
                if (whole_rows && inside_w) {
                    ISA(im2col_copy)(d, ct, x + r * xr + q0 * xp, 1, kw * c);
                    continue;
                }
                for (int64_t b = 0; b < kw; b++) {
                    const int64_t q = q0 + b * dw;
                    if (q < 0 || q >= w)
                        ISA(im2col_fill)(d + b * c * ct, ct, c, 0.0f);
                    else
                        ISA(im2col_copy)(d + b * c * ct, ct, x + r * xr + q * xp, xc, c);
                }
            }
        }
    }
}

/* Channel-major columns: per (channel, tap) and output row, the row's pixels gathered at the stride sw * xp. */
static TARGET void ISA(im2col_channel_major)(const float *x, int64_t xc, float *cols, int64_t ct, const int64_t *g) {
    const int64_t h = g[G_H], w = g[G_W], c = g[G_C], xr = g[G_XROW], xp = g[G_XPIX];
    const int64_t kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], dh = g[G_DH], dw = g[G_DW];
    const int64_t pt = g[G_PT], pl = g[G_PL], wo = g[G_WO], yr = g[G_YROW], yp = g[G_YPIX], i0 = g[G_I0];
    for (int64_t k = 0; k < c; k++)
        for (int64_t a = 0; a < kh; a++)
            for (int64_t b = 0; b < kw; b++) {
                float *dt = cols + ((k * kh + a) * kw + b) * ct;
                int64_t jl = 0, jh = wo; /* the output columns whose tap lies inside the row */
                while (jl < wo && jl * sw - pl + b * dw < 0) jl++;
                while (jh > jl && (jh - 1) * sw - pl + b * dw >= w) jh--;
                for (int64_t i = i0; i < g[G_I1]; i++) {
                    float *d = dt + (i - i0) * yr;
                    const int64_t r = i * sh - pt + a * dh;
                    if (r < 0 || r >= h) {
                        ISA(im2col_fill)(d, yp, wo, 0.0f);
                        continue;
                    }
                    ISA(im2col_fill)(d, yp, jl, 0.0f);
                    const float *s = x + r * xr + (jl * sw - pl + b * dw) * xp + k * xc;
                    if (yp == 1 && sw * xp == 2)
                        ISA(im2col_copy_even)(d + jl, s, jh - jl);
                    else
                        ISA(im2col_copy)(d + jl * yp, yp, s, sw * xp, jh - jl);
                    ISA(im2col_fill)(d + jh * yp, yp, wo - jh, 0.0f);
                }
            }
}

static TARGET void ISA(im2col)(const float *x, int64_t xc, float *cols, int64_t ct, const int64_t *g, int channel_major,
                               int ones) {
    if (channel_major)
        ISA(im2col_channel_major)(x, xc, cols, ct, g);
    else
        ISA(im2col_tap_major)(x, xc, cols, ct, g);
    if (!ones) return;
    const int64_t taps = g[G_KH] * g[G_KW] * g[G_C];
    for (int64_t i = g[G_I0]; i < g[G_I1]; i++)
        ISA(im2col_fill)(cols + (i - g[G_I0]) * g[G_YROW] + taps * ct, g[G_YPIX], g[G_WO], 1.0f);
}
