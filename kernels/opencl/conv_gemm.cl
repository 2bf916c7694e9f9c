// Implicit-GEMM convolution for GPUs (any kernel size, stride, padding, dilation, groups) with the fused epilogue
// Y = act(conv(X, W) + bias + Z). Per image and group it is the product C[M][N] = A[M][K] B[K][N] with M = output
// channels of the group, N = output pixels, K = input channels of the group x KH x KW; B (im2col of X) is never
// formed: each work-group gathers its BK x BN tile of B from X, zero outside the image, into local memory next to
// the BK x BM tile of the weights, and every work-item accumulates TM x TN outputs from there (gemm.cl gemm_local is
// the same tiling for a B that is already a matrix).
//
// The host packs A as [groups][Kp][Mp]: a k-slice of a tile is one coalesced read; Mp is M rounded up to BM and Kp
// is K rounded up to SPLIT slices of a multiple of BK, both zero-padded, so weight reads need no bounds checks.
// A work-item's outputs are strided by the group's shape (rows ty + i * WM, columns tx + j * WN): neighbouring
// work-items read neighbouring local words (no bank conflicts) and store neighbouring pixels (coalesced).
// Every work-item gathers B at one fixed column (THREADS is a multiple of BN), so a pixel's (row, column) is
// computed once, outside the K loop; KH, KW, SH, SW, DH, DW are compile-time, so k -> (channel, kh, kw) is cheap.
//
// Split K (SPLIT > 1, small images where the tiles alone cannot fill the GPU): dim 2 also runs over SPLIT slices
// of K; a slice writes its partial sums to the scratch P [SPLIT][planes][M][N] (planes = batch x groups) and
// conv_gemm_sum adds the slices, the bias and the epilogue.
// Knobs: TM, TN (outputs per work-item), WM, WN (work-group rows x columns), BK (K depth per tile), SPLIT.
// Work: dim 0 = ceil(N / BN) * WN, dim 1 = Mp / BM * WM, dim 2 = planes * SPLIT; local (WN, WM, 1) exactly.

#if defined(WM)
#define BM (WM * TM)
#define BN (WN * TN)
#define THREADS (WM * WN)
#define TAPS (KH * KW)
#define B_ROWS_PER_PASS (THREADS / BN)  // B rows one pass of the work-group gathers (each item: one column)

// With SPLIT > 1, Y is the float scratch of partial sums (kept float in fp16 packs: accumulation stays fp32).
#if SPLIT > 1
#define CONV_GEMM_OUT float
#else
#define CONV_GEMM_OUT data_t
#endif

__kernel void conv_gemm(__global const data_t *restrict X, __global const data_t *restrict A,
                        __global const data_t *restrict bias, __global const data_t *restrict Z,
                        __global CONV_GEMM_OUT *restrict Y, int C, int H, int W, int Wo, int N, int groups, int cig,
                        int cog, int planes, int Mp, int K, int k_chunk, int pad_t, int pad_l, int has_z, int act,
                        float p0, float p1)
{
    __local float As[BK][BM];
    __local float Bs[BK][BN];
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int lid = ty * WN + tx;
    const int n_base = get_group_id(0) * BN;
    const int m_base = get_group_id(1) * BM;
    const int plane = get_global_id(2) % planes;  // batch * groups + group (dim 2's local size is 1)
    const int slice = get_global_id(2) / planes;
    const int g = plane % groups;

    X += ((size_t)(plane / groups) * C + (size_t)g * cig) * H * W;
    A += (size_t)g * (k_chunk * SPLIT) * Mp + m_base;

    // The one column of B this work-item gathers: its pixel's top-left input tap.
    const int bn = lid % BN;
    const int n = n_base + bn;
    const int oy = n / Wo, ox = n - (n / Wo) * Wo;
    const int iy0 = oy * SH - pad_t, ix0 = ox * SW - pad_l;
    const bool n_ok = n < N;

    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;

    const int k_begin = slice * k_chunk;
    for (int k0 = k_begin; k0 < k_begin + k_chunk && k0 < K; k0 += BK) {
        for (int e = lid; e < BK * BM; e += THREADS)  // the weight tile: BK rows of BM channels
            As[e / BM][e % BM] = LD(A, (size_t)(k0 + e / BM) * Mp + e % BM);
#pragma unroll
        for (int pass = 0; pass < BK / B_ROWS_PER_PASS; ++pass) {  // the input tile, gathered
            const int kk = lid / BN + pass * B_ROWS_PER_PASS;
            const int k = k0 + kk;
            const int ci = k / TAPS, tap = k - (k / TAPS) * TAPS;
            const int iy = iy0 + (tap / KW) * DH, ix = ix0 + (tap - (tap / KW) * KW) * DW;
            const bool inside = n_ok && k < K && iy >= 0 && iy < H && ix >= 0 && ix < W;
            Bs[kk][bn] = inside ? LD(X, ((size_t)ci * H + iy) * W + ix) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        LOCAL_TILE_FMA(As, Bs, acc)
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    for (int i = 0; i < TM; ++i) {
        const int m = m_base + ty + i * WM;
        if (m >= cog)
            break;
        for (int j = 0; j < TN; ++j) {
            const int col = n_base + tx + j * WN;
            if (col >= N)
                break;
            const size_t at = ((size_t)plane * cog + m) * N + col;  // = ((image * Co) + g * cog + m) * N + col
#if SPLIT > 1
            Y[(size_t)slice * planes * cog * N + at] = acc[i][j];
#else
            float v = acc[i][j] + LD(bias, g * cog + m);
            FUSED_EPILOGUE(float, v, LD(Z, at), has_z, act, p0, p1)
            ST(Y, at, v);
#endif
        }
    }
}
#endif

// The split-K sum: Y = act(sum of the SPLIT partial products in P + bias + Z), one work-item per output.
// Work: dim 0 = N (pixels), dim 1 = M (channels of a group), dim 2 = planes.
__kernel void conv_gemm_sum(__global const float *restrict P, __global const data_t *restrict bias,
                            __global const data_t *restrict Z, __global data_t *restrict Y, int N, int cog,
                            int planes, int groups, int splits, int has_z, int act, float p0, float p1)
{
    const int n = get_global_id(0), m = get_global_id(1), plane = get_global_id(2);
    if (n >= N || m >= cog || plane >= planes)
        return;
    const size_t at = ((size_t)plane * cog + m) * N + n;
    const size_t slice = (size_t)planes * cog * N;
    float v = P[at];
    for (int s = 1; s < splits; ++s)
        v += P[s * slice + at];
    v += LD(bias, (plane % groups) * cog + m);
    FUSED_EPILOGUE(float, v, LD(Z, at), has_z, act, p0, p1)
    ST(Y, at, v);
}
