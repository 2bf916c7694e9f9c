/* Self-test of conv_hwc.c against plain reference loops, with no Python, for every ISA build this CPU runs
 * (and for CPUs this machine cannot run Python on: an ARM build under qemu, an AVX2-only x86 under qemu's
 * EPYC model; tests/test_native_kernels.py runs those where the tools are installed):
 *
 *   cc -O3 -Wno-psabi kernels/cpu/selftest.c -lm -o selftest && ./selftest
 *   aarch64-linux-gnu-gcc -O3 -Wno-psabi kernels/cpu/selftest.c -lm -o selftest && qemu-aarch64 -L /usr/aarch64-linux-gnu ./selftest
 *   qemu-x86_64 -cpu EPYC-Rome ./selftest       (an AMD CPU without AVX-512: the avx2 and sse builds run)
 *
 * Also checks that bad arguments (geometry, buffer lengths) return error codes and write nothing.
 * Prints one line per case and "all N cases passed" with the builds that ran, or exits 1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_hwc.c"

static unsigned long long rng_state = 88172645463325252ULL;
static float uniform(void) { /* xorshift64: [-2, 2) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 4.0f - 2.0f;
}

static float *random_array(long n) {
    float *a = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (long i = 0; i < n; i++) a[i] = uniform();
    return a;
}

static int failures = 0, cases = 0, isa = 0;

static void check(const char *name, const float *got, const double *want, long n, double tol) {
    double worst = 0;
    for (long i = 0; i < n; i++) {
        double err = isnan(want[i]) ? (isnan(got[i]) ? 0 : INFINITY) : fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
        if (!(err <= worst)) worst = err; /* NaN counts as a failure */
    }
    cases++;
    int ok = worst <= tol;
    printf("%-7s %-56s max rel err %.2e %s\n", ISA_NAMES[isa], name, worst, ok ? "ok" : "FAILED");
    if (!ok) failures++;
}

static void expect_code(const char *name, int got, int want) {
    cases++;
    if (got == want) return;
    printf("%-7s %-56s returned %d, expected %d (%s) FAILED\n", ISA_NAMES[isa], name, got, want,
           edgeinfer_cpu_kernels_error(want));
    failures++;
}

static double activate(int kind, double v, double a, double b) {
    switch (kind) {
    case ACT_LEAKY_RELU: return v < 0 ? v * a : v;
    case ACT_HARD_SIGMOID: return fmin(1, fmax(0, v * a + b));
    case ACT_HARD_SWISH: return v * fmin(1, fmax(0, v * a + b));
    case ACT_SIGMOID: return 1 / (1 + exp(-v));
    case ACT_SILU: return v / (1 + exp(-v));
    default: return fmin(b, fmax(a, v));
    }
}

static void depthwise_case(long c, long h, long w, long k, long s, long d, long pad, int kind, float a, float b) {
    const long ho = (h + 2 * pad - d * (k - 1) - 1) / s + 1, wo = (w + 2 * pad - d * (k - 1) - 1) / s + 1;
    float *x = random_array(h * w * c), *wt = random_array(k * k * c), *bias = random_array(c);
    float *y = malloc(sizeof(float) * (size_t)(ho * wo * c));
    double *ref = malloc(sizeof(double) * (size_t)(ho * wo * c));
    const int64_t g[G_COUNT] = {h, w, c, w * c, c, k, k, s, s, d, d, pad, pad, wo, wo * c, c, 0, ho};
    int code = edgeinfer_depthwise_hwc(isa, x, h * w * c, wt, k * k * c, bias, c, y, ho * wo * c, g, G_COUNT, kind, a, b);
    for (long i = 0; i < ho; i++)
        for (long j = 0; j < wo; j++)
            for (long ch = 0; ch < c; ch++) {
                double acc = bias[ch];
                for (long p = 0; p < k; p++)
                    for (long q = 0; q < k; q++) {
                        long r = i * s - pad + p * d, col = j * s - pad + q * d;
                        if (r >= 0 && r < h && col >= 0 && col < w) acc += (double)x[(r * w + col) * c + ch] * wt[(p * k + q) * c + ch];
                    }
                ref[(i * wo + j) * c + ch] = activate(kind, acc, a, b);
            }
    char name[96];
    snprintf(name, sizeof name, "depthwise C%ld %ldx%ld k%ld s%ld d%ld p%ld act %d", c, h, w, k, s, d, pad, kind);
    expect_code(name, code, 0);
    check(name, y, ref, ho * wo * c, 1e-5);
    free(x), free(wt), free(bias), free(y), free(ref);
}

/* m channels of rows `row` floats apart (a channel range of a wider block when row > m) */
static void epilogue_case(int kind, float a, float b, long pixels, long m, long row, int with_bias, int with_z) {
    float *y = random_array(pixels * row), *bias = random_array(m), *z = random_array(pixels * m);
    double *ref = malloc(sizeof(double) * (size_t)(pixels * row));
    for (long i = 0; i < pixels * row; i++) y[i] *= 30, ref[i] = y[i]; /* reach exp's far ends */
    for (long p = 0; p < pixels; p++)
        for (long k = 0; k < m; k++)
            ref[p * row + k] = activate(kind, (double)y[p * row + k] + (with_bias ? bias[k] : 0) + (with_z ? z[p * m + k] : 0), a, b);
    int code = edgeinfer_epilogue_hwc(isa, y, pixels * row, pixels, m, row, with_bias ? bias : 0, m, with_z ? z : 0,
                                      pixels * m, m, kind, a, b);
    char name[96];
    snprintf(name, sizeof name, "epilogue kind %d, %ld x %ld (rows of %ld)%s%s", kind, pixels, m, row,
             with_bias ? " +bias" : "", with_z ? " +z" : "");
    expect_code(name, code, 0);
    check(name, y, ref, pixels * row, 1e-5);
    free(y), free(bias), free(z), free(ref);
}

static void max_pool_case(long c, long h, long k, long s, long d, long pad, int with_nan) {
    const long ho = (h + 2 * pad - d * (k - 1) - 1) / s + 1;
    float *x = random_array(h * h * c), *y = malloc(sizeof(float) * (size_t)(ho * ho * c));
    double *ref = malloc(sizeof(double) * (size_t)(ho * ho * c));
    if (with_nan) x[(h / 2 * h + h / 3) * c + c / 2] = NAN, x[c - 1] = INFINITY;
    const int64_t g[G_COUNT] = {h, h, c, h * c, c, k, k, s, s, d, d, pad, pad, ho, ho * c, c, 0, ho};
    int code = edgeinfer_max_pool_hwc(isa, x, h * h * c, y, ho * ho * c, g, G_COUNT);
    for (long i = 0; i < ho; i++)
        for (long j = 0; j < ho; j++)
            for (long ch = 0; ch < c; ch++) {
                double best = -INFINITY;
                for (long p = 0; p < k; p++)
                    for (long q = 0; q < k; q++) {
                        long r = i * s - pad + p * d, col = j * s - pad + q * d;
                        if (r < 0 || r >= h || col < 0 || col >= h) continue;
                        float v = x[(r * h + col) * c + ch];
                        best = isnan(best) || isnan(v) ? NAN : (v > best ? v : best);
                    }
                ref[(i * ho + j) * c + ch] = best;
            }
    char name[96];
    snprintf(name, sizeof name, "max pool C%ld %ldx%ld k%ld s%ld d%ld p%ld%s", c, h, h, k, s, d, pad, with_nan ? " NaN" : "");
    expect_code(name, code, 0);
    check(name, y, ref, ho * ho * c, 0);
    free(x), free(y), free(ref);
}

/* An im2col of an (h, w, c) image, channels-last (planar: NCHW's planes) into pixel rows of tap-major columns
 * (channel_major: rows of pixels per channel-major column), with the column of ones; values are copies: exact. */
static void im2col_case(long c, long h, long w, long kh, long kw, long s, long d, long pt, long pl, int planar,
                        int channel_major) {
    const long ho = (h + 2 * pt - d * (kh - 1) - 1) / s + 1, wo = (w + 2 * pl - d * (kw - 1) - 1) / s + 1;
    const long taps = kh * kw * c, cols = taps + 1, pixels = ho * wo;
    float *x = random_array(h * w * c), *y = random_array(pixels * cols);
    double *ref = malloc(sizeof(double) * (size_t)(pixels * cols));
    const int64_t xr = planar ? w : w * c, xp = planar ? 1 : c, xc = planar ? h * w : 1;
    const int64_t yr = channel_major ? wo : wo * cols, yp = channel_major ? 1 : cols, yt = channel_major ? pixels : 1;
    const int64_t g[G_COUNT] = {h, w, c, xr, xp, kh, kw, s, s, d, d, pt, pl, wo, yr, yp, 0, ho};
    int code = edgeinfer_im2col(isa, x, h * w * c, xc, y, pixels * cols, yt, g, G_COUNT, channel_major, 1);
    for (long i = 0; i < ho; i++)
        for (long j = 0; j < wo; j++) {
            for (long a = 0; a < kh; a++)
                for (long b = 0; b < kw; b++)
                    for (long k = 0; k < c; k++) {
                        const long r = i * s - pt + a * d, q = j * s - pl + b * d;
                        const long t = channel_major ? (k * kh + a) * kw + b : (a * kw + b) * c + k;
                        const int inside = r >= 0 && r < h && q >= 0 && q < w;
                        ref[i * yr + j * yp + t * yt] = inside ? x[r * xr + q * xp + k * xc] : 0.0;
                    }
            ref[i * yr + j * yp + taps * yt] = 1.0;
        }
    char name[96];
    snprintf(name, sizeof name, "im2col C%ld %ldx%ld k%ldx%ld s%ld d%ld p%ld,%ld%s%s", c, h, w, kh, kw, s, d, pt, pl,
             planar ? " planar" : "", channel_major ? " channel-major" : "");
    expect_code(name, code, 0);
    check(name, y, ref, pixels * cols, 0);
    free(x), free(y), free(ref);
}

/* Bad arguments: each must return its error code and leave the output untouched. */
static void argument_checks(void) {
    enum { H = 6, W = 6, C = 8, K = 3, HO = 6, WO = 6 };
    static float x[H * W * C], wt[K * K * C], bias[C], y[HO * WO * C];
    const int64_t good[G_COUNT] = {H, W, C, W * C, C, K, K, 1, 1, 1, 1, 1, 1, WO, WO * C, C, 0, HO};
    struct { int field; int64_t value; } bad[] = {
        {G_DH, -1000}, {G_DW, -1}, {G_DH, 0}, {G_SH, 0}, {G_SW, -2}, {G_KH, 0}, {G_KW, -3}, {G_H, 0}, {G_W, -1},
        {G_C, 0}, {G_PT, -1}, {G_PL, 3}, {G_PT, (int64_t)1 << 31}, {G_WO, 0}, {G_WO, 8}, {G_I0, -1}, {G_I1, 8},
        {G_XPIX, C - 1}, {G_XROW, W * C - 1}, {G_YPIX, 4}, {G_YROW, -5}, {G_H, (int64_t)1 << 40},
        {G_DH, INT64_MIN}, {G_XROW, INT64_MAX},
    };
    for (unsigned n = 0; n < sizeof bad / sizeof bad[0]; n++) {
        int64_t g[G_COUNT];
        memcpy(g, good, sizeof g);
        g[bad[n].field] = bad[n].value;
        const int want = 1 + bad[n].field;
        memset(y, 0, sizeof y);
        char name[96];
        snprintf(name, sizeof name, "bad geometry g[%d] = %lld", bad[n].field, (long long)bad[n].value);
        expect_code(name, edgeinfer_depthwise_hwc(isa, x, H * W * C, wt, K * K * C, bias, C, y, HO * WO * C, g, G_COUNT,
                                                  ACT_CLAMP, 0, 6), want);
        expect_code(name, edgeinfer_max_pool_hwc(isa, x, H * W * C, y, HO * WO * C, g, G_COUNT), want);
        const int stride = bad[n].field == G_XROW || bad[n].field == G_XPIX || bad[n].field == G_YROW ||
                           bad[n].field == G_YPIX;
        if (!stride) /* (im2col takes any strides that keep it inside its buffers) */
            expect_code(name, edgeinfer_im2col(isa, x, H * W * C, 1, y, HO * WO * C, 1, g, G_COUNT, 0, 0), want);
        for (long i = 0; i < HO * WO * C; i++)
            if (y[i] != 0) {
                printf("%-7s %s: the output was written FAILED\n", ISA_NAMES[isa], name);
                failures++;
                break;
            }
    }
    const int64_t *g = good;
    expect_code("short input", edgeinfer_max_pool_hwc(isa, x, H * W * C - 1, y, HO * WO * C, g, G_COUNT), E_X_LENGTH);
    expect_code("short output", edgeinfer_max_pool_hwc(isa, x, H * W * C, y, HO * WO * C - 1, g, G_COUNT), E_Y_LENGTH);
    expect_code("short weights", edgeinfer_depthwise_hwc(isa, x, H * W * C, wt, K * K * C - 1, bias, C, y, HO * WO * C, g,
                                                         G_COUNT, ACT_CLAMP, 0, 6), E_W_LENGTH);
    expect_code("short bias", edgeinfer_depthwise_hwc(isa, x, H * W * C, wt, K * K * C, bias, C - 1, y, HO * WO * C, g,
                                                      G_COUNT, ACT_CLAMP, 0, 6), E_BIAS_LENGTH);
    expect_code("geometry length", edgeinfer_max_pool_hwc(isa, x, H * W * C, y, HO * WO * C, g, G_COUNT - 1),
                E_GEOMETRY_LENGTH);
    expect_code("NULL input", edgeinfer_max_pool_hwc(isa, 0, H * W * C, y, HO * WO * C, g, G_COUNT), E_NULL);
    expect_code("activation kind", edgeinfer_depthwise_hwc(isa, x, H * W * C, wt, K * K * C, 0, 0, y, HO * WO * C, g,
                                                           G_COUNT, ACT_COUNT, 0, 0), E_KIND);
    expect_code("unknown ISA", edgeinfer_max_pool_hwc(ISA_COUNT, x, H * W * C, y, HO * WO * C, g, G_COUNT), E_ISA);
    expect_code("epilogue pixels", edgeinfer_epilogue_hwc(isa, y, 64, -1, 8, 8, 0, 0, 0, 0, 0, ACT_CLAMP, 0, 6), E_PIXELS);
    expect_code("epilogue channels", edgeinfer_epilogue_hwc(isa, y, 64, 8, 0, 8, 0, 0, 0, 0, 0, ACT_CLAMP, 0, 6),
                E_CHANNELS);
    expect_code("epilogue row", edgeinfer_epilogue_hwc(isa, y, 64, 8, 8, 7, 0, 0, 0, 0, 0, ACT_CLAMP, 0, 6), E_Y_ROW);
    expect_code("epilogue short output", edgeinfer_epilogue_hwc(isa, y, 63, 8, 8, 8, 0, 0, 0, 0, 0, ACT_CLAMP, 0, 6),
                E_Y_LENGTH);
    expect_code("epilogue short residual", edgeinfer_epilogue_hwc(isa, y, 64, 8, 8, 8, 0, 0, x, 63, 8, ACT_SILU, 0, 0),
                E_Z_LENGTH);
    expect_code("epilogue short bias", edgeinfer_epilogue_hwc(isa, y, 64, 8, 8, 8, bias, 7, 0, 0, 0, ACT_SILU, 0, 0),
                E_BIAS_LENGTH);
    expect_code("epilogue overflow", edgeinfer_epilogue_hwc(isa, y, 64, INT64_MAX / 4, 8, 8, 0, 0, 0, 0, 0, ACT_SILU, 0, 0),
                E_Y_LENGTH);
    /* im2col of the good geometry with C = 1 writes HO * WO * K * K floats, and reads the whole (H, W) plane */
    int64_t one[G_COUNT];
    memcpy(one, good, sizeof one);
    one[G_C] = 1, one[G_XROW] = W, one[G_XPIX] = 1, one[G_YROW] = WO * K * K, one[G_YPIX] = K * K;
    enum { COLS = HO * WO * K * K };
    static float patches[COLS];
    const long cols = COLS;
    expect_code("im2col", edgeinfer_im2col(isa, x, H * W, 1, patches, cols, 1, one, G_COUNT, 0, 0), 0);
    expect_code("im2col short input", edgeinfer_im2col(isa, x, H * W - 1, 1, patches, cols, 1, one, G_COUNT, 0, 0),
                E_X_LENGTH);
    expect_code("im2col short output", edgeinfer_im2col(isa, x, H * W, 1, patches, cols - 1, 1, one, G_COUNT, 0, 0),
                E_Y_LENGTH);
    expect_code("im2col no room for the ones", edgeinfer_im2col(isa, x, H * W, 1, patches, cols, 1, one, G_COUNT, 0, 1),
                E_Y_LENGTH);
    expect_code("im2col negative stride", edgeinfer_im2col(isa, x, H * W, -1, patches, cols, 1, one, G_COUNT, 0, 0),
                E_STRIDES);
    expect_code("im2col huge stride", edgeinfer_im2col(isa, x, H * W, 1, patches, cols, INT64_MAX, one, G_COUNT, 0, 0),
                E_STRIDES);
    expect_code("im2col overflowing stride", edgeinfer_im2col(isa, x, H * W, 1, patches, cols, (int64_t)1 << 30, one,
                                                              G_COUNT, 1, 1), E_Y_LENGTH);
    expect_code("im2col NULL output", edgeinfer_im2col(isa, x, H * W, 1, 0, cols, 1, one, G_COUNT, 0, 0), E_NULL);
    printf("%-7s argument checks done\n", ISA_NAMES[isa]);
}

int main(void) {
    char ran[64] = "";
    for (isa = 0; isa < ISA_COUNT; isa++) {
        if (!edgeinfer_cpu_kernels_isa_runs(isa)) {
            printf("%-7s not run: this CPU lacks it\n", ISA_NAMES[isa]);
            continue;
        }
        strcat(ran, " "), strcat(ran, ISA_NAMES[isa]);
        depthwise_case(32, 9, 11, 3, 1, 1, 1, ACT_CLAMP, 0, 6); /* the register-blocked 3x3 rows */
        depthwise_case(24, 9, 9, 3, 1, 1, 1, ACT_CLAMP, 0, 6);  /* 8-wide rows (AVX-512 takes the AVX2 build) */
        depthwise_case(48, 8, 10, 3, 2, 1, 1, ACT_CLAMP, -INFINITY, INFINITY);
        depthwise_case(20, 7, 7, 3, 1, 1, 1, ACT_CLAMP, 0, INFINITY); /* 4-wide rows */
        depthwise_case(3, 7, 6, 3, 1, 1, 1, ACT_CLAMP, -1, 1);      /* scalar channels only */
        depthwise_case(16, 10, 9, 5, 1, 2, 4, ACT_CLAMP, -1, 1);
        depthwise_case(8, 2, 2, 3, 1, 1, 1, ACT_CLAMP, 0, 6); /* image smaller than the window */
        depthwise_case(16, 12, 13, 3, 1, 1, 1, ACT_SILU, 0, 0);
        depthwise_case(64, 9, 9, 3, 2, 1, 1, ACT_HARD_SWISH, 1.0f / 6, 0.5f);
        depthwise_case(16, 6, 6, 3, 1, 1, 1, ACT_SIGMOID, 0, 0);
        for (int kind = ACT_CLAMP; kind <= ACT_SILU; kind++) {
            float a = kind == ACT_CLAMP ? 0.0f : kind == ACT_LEAKY_RELU ? 0.1f : kind == ACT_HARD_SIGMOID ? 0.2f : 1.0f / 6;
            float b = kind == ACT_CLAMP ? 6.0f : 0.5f;
            epilogue_case(kind, a, b, 37, 40, 45, 1, 1); /* a channel range of a wider block */
            epilogue_case(kind, a, b, 37, 7, 7, 1, 0);   /* contiguous pixels, grouped */
            epilogue_case(kind, a, b, 1000, 1, 1, 1, 1); /* YOLOX's 1-channel heads */
            epilogue_case(kind, a, b, 301, 4, 4, 0, 1);
        }
        epilogue_case(ACT_CLAMP, -INFINITY, INFINITY, 301, 24, 24, 1, 1); /* no activation (the identity) */
        max_pool_case(64, 13, 3, 2, 1, 0, 0); /* SqueezeNet's */
        max_pool_case(20, 9, 3, 2, 1, 1, 1);
        max_pool_case(8, 9, 5, 1, 1, 2, 1);
        max_pool_case(32, 13, 5, 1, 1, 2, 1);  /* YOLOX's SPP: the separable form */
        max_pool_case(32, 13, 13, 1, 1, 6, 0);
        max_pool_case(48, 21, 9, 1, 1, 4, 1);
        max_pool_case(16, 12, 3, 1, 2, 2, 1);  /* dilated */
        max_pool_case(3, 8, 3, 1, 1, 1, 1);    /* scalar channels only */
        im2col_case(16, 9, 11, 3, 3, 1, 1, 1, 1, 0, 0); /* SqueezeNet's fire modules: whole kernel rows */
        im2col_case(12, 10, 9, 3, 3, 2, 1, 1, 1, 0, 0); /* YOLOX's stride-2 convs */
        im2col_case(5, 8, 7, 3, 2, 1, 2, 2, 1, 0, 0);  /* dilated, odd channels, a 3x2 window */
        im2col_case(4, 3, 2, 3, 3, 1, 1, 2, 2, 0, 0);  /* an image smaller than the window */
        im2col_case(3, 12, 13, 3, 3, 2, 1, 1, 1, 1, 1); /* the NCHW stem: planar input, channel-major columns */
        im2col_case(3, 11, 10, 3, 3, 2, 1, 0, 0, 1, 1);
        im2col_case(6, 9, 9, 5, 5, 1, 1, 2, 2, 1, 0);  /* planar input into tap-major rows */
        im2col_case(6, 9, 8, 3, 3, 1, 2, 2, 1, 0, 1);  /* channels-last into channel-major rows */
        im2col_case(3, 224, 223, 3, 3, 2, 1, 1, 1, 1, 1); /* a full-size stem: the shuffled rows, their tails */
        im2col_case(16, 56, 55, 3, 3, 1, 1, 1, 1, 0, 1);
        argument_checks();
    }
    if (failures) {
        printf("%d of %d cases FAILED\n", failures, cases);
        return 1;
    }
    printf("all %d cases passed; builds run:%s\n", cases, ran);
    return 0;
}
