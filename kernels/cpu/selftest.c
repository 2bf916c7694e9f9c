/* Self-test of conv_hwc.c against plain reference loops, with no Python: for CPUs this machine cannot run
 * Python on, e.g. an ARM build run under qemu (tests/test_native_kernels.py does that where
 * aarch64-linux-gnu-gcc and qemu-aarch64 are installed):
 *
 *   aarch64-linux-gnu-gcc -O3 -Wno-psabi kernels/cpu/selftest.c -lm -o selftest && qemu-aarch64 -L /usr/aarch64-linux-gnu ./selftest
 *
 * Prints one line per case and "all N cases passed", or exits 1 naming the first case that failed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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

static int failures = 0, cases = 0;

static void check(const char *name, const float *got, const double *want, long n, double tol) {
    double worst = 0;
    for (long i = 0; i < n; i++) {
        double err = fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
        if (!(err <= worst)) worst = err; /* NaN counts as a failure */
    }
    cases++;
    int ok = worst <= tol;
    printf("%-48s max rel err %.2e %s\n", name, worst, ok ? "ok" : "FAILED");
    if (!ok) failures++;
}

static void depthwise_case(long c, long h, long w, long k, long s, long d, long pad, float lo, float hi) {
    const long ho = (h + 2 * pad - d * (k - 1) - 1) / s + 1, wo = (w + 2 * pad - d * (k - 1) - 1) / s + 1;
    float *x = random_array(h * w * c), *wt = random_array(k * k * c), *bias = random_array(c);
    float *y = malloc(sizeof(float) * (size_t)(ho * wo * c));
    double *ref = malloc(sizeof(double) * (size_t)(ho * wo * c));
    const int64_t g[G_COUNT] = {h, w, c, w * c, c, k, k, s, s, d, d, pad, pad, wo, wo * c, c, 0, ho};
    edgeinfer_depthwise_hwc(x, wt, bias, y, g, lo, hi);
    for (long i = 0; i < ho; i++)
        for (long j = 0; j < wo; j++)
            for (long ch = 0; ch < c; ch++) {
                double acc = bias[ch];
                for (long a = 0; a < k; a++)
                    for (long b = 0; b < k; b++) {
                        long r = i * s - pad + a * d, q = j * s - pad + b * d;
                        if (r >= 0 && r < h && q >= 0 && q < w) acc += (double)x[(r * w + q) * c + ch] * wt[(a * k + b) * c + ch];
                    }
                ref[(i * wo + j) * c + ch] = acc < lo ? lo : (acc > hi ? hi : acc);
            }
    char name[96];
    snprintf(name, sizeof name, "depthwise C%ld %ldx%ld k%ld s%ld d%ld p%ld", c, h, w, k, s, d, pad);
    check(name, y, ref, ho * wo * c, 1e-5);
    free(x), free(wt), free(bias), free(y), free(ref);
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

static void epilogue_case(int kind, float a, float b, long m) {
    const long pixels = 37, row = m + 5; /* a channel range of a wider block */
    float *y = random_array(pixels * row), *bias = random_array(m), *z = random_array(pixels * m);
    double *ref = malloc(sizeof(double) * (size_t)(pixels * row));
    for (long i = 0; i < pixels * row; i++) y[i] *= 30, ref[i] = y[i]; /* reach exp's far ends */
    for (long p = 0; p < pixels; p++)
        for (long k = 0; k < m; k++) ref[p * row + k] = activate(kind, (double)y[p * row + k] + bias[k] + z[p * m + k], a, b);
    edgeinfer_epilogue_hwc(y, pixels, m, row, bias, z, m, kind, a, b);
    char name[96];
    snprintf(name, sizeof name, "epilogue kind %d, %ld channels", kind, m);
    check(name, y, ref, pixels * row, 1e-5);
    free(y), free(bias), free(z), free(ref);
}

static void max_pool_case(long c, long h, long k, long s, long pad) {
    const long ho = (h + 2 * pad - k) / s + 1;
    float *x = random_array(h * h * c), *y = malloc(sizeof(float) * (size_t)(ho * ho * c));
    double *ref = malloc(sizeof(double) * (size_t)(ho * ho * c));
    const int64_t g[G_COUNT] = {h, h, c, h * c, c, k, k, s, s, 1, 1, pad, pad, ho, ho * c, c, 0, ho};
    edgeinfer_max_pool_hwc(x, y, g);
    for (long i = 0; i < ho; i++)
        for (long j = 0; j < ho; j++)
            for (long ch = 0; ch < c; ch++) {
                double best = -INFINITY;
                for (long a = 0; a < k; a++)
                    for (long b = 0; b < k; b++) {
                        long r = i * s - pad + a, q = j * s - pad + b;
                        if (r >= 0 && r < h && q >= 0 && q < h && x[(r * h + q) * c + ch] > best) best = x[(r * h + q) * c + ch];
                    }
                ref[(i * ho + j) * c + ch] = best;
            }
    char name[96];
    snprintf(name, sizeof name, "max pool C%ld %ldx%ld k%ld s%ld p%ld", c, h, h, k, s, pad);
    check(name, y, ref, ho * ho * c, 0);
    free(x), free(y), free(ref);
}

int main(void) {
    depthwise_case(32, 9, 11, 3, 1, 1, 1, 0, 6);  /* the 16-wide (AVX-512) or 8-wide 3x3 rows */
    depthwise_case(24, 9, 9, 3, 1, 1, 1, 0, 6);   /* 8-wide rows only */
    depthwise_case(48, 8, 10, 3, 2, 1, 1, -INFINITY, INFINITY);
    depthwise_case(20, 7, 7, 3, 1, 1, 1, 0, INFINITY); /* a scalar channel tail */
    depthwise_case(16, 10, 9, 5, 1, 2, 4, -1, 1);
    depthwise_case(8, 2, 2, 3, 1, 1, 1, 0, 6);    /* image smaller than the window */
    for (int kind = ACT_CLAMP; kind <= ACT_SILU; kind++) {
        float a = kind == ACT_CLAMP ? 0.0f : kind == ACT_LEAKY_RELU ? 0.1f : kind == ACT_HARD_SIGMOID ? 0.2f : 1.0f / 6;
        float b = kind == ACT_CLAMP ? 6.0f : 0.5f;
        epilogue_case(kind, a, b, 40);
        epilogue_case(kind, a, b, 7);
    }
    max_pool_case(64, 13, 3, 2, 0);
    max_pool_case(20, 9, 3, 2, 1);
    max_pool_case(8, 9, 5, 1, 2);
    if (failures) {
        printf("%d of %d cases FAILED\n", failures, cases);
        return 1;
    }
    printf("all %d cases passed\n", cases);
    return 0;
}
