// Tiled GEMM with a fused epilogue: C = act(A * B + bias[m] + Z) (has_z 1; has_z 2: act(A * B + bias[m]) + Z,
// a residual Add after the activation), batched over get_global_id(2).
// Serves 1x1 convolutions (A = weights [Co][Ci], B = input [Ci][H*W]) and Gemm/MatMul.
//
// Each work-item computes a TM x TN tile of C: TM rows (output channels) by TN consecutive columns
// (pixels), held in TM vector registers of width TN. A is packed by the host as [ceil(M/TM)][K][TM] so
// the TM weights of one k are one vector load (broadcast lane by lane: FMA_ROWS in common.cl); B rows are
// read with one vector load per k.
// Three kernels, chosen by the host per workload (config "VEC"):
//   gemm_bcast ("B"): NV vectors of 16 columns x TM rows; each weight is broadcast straight from memory
//     (one load per row and k, no lane shuffles). On PoCL/AVX-512 it beat gemm_vec_n on most MobileNetV2
//     workloads by 1.1-2x (benchmarks/opencl_tune.py): the TM lane swizzles of FMA_ROWS compete with
//     the FMAs for the vector ports, broadcast loads do not.
//   gemm_vec_n ("N"): the TN columns form the vector, the TM weights of one k are one vector load whose
//     lanes are broadcast by swizzles (FMA_ROWS);
//   gemm_vec_m ("M"): the TM rows form the vector (few columns: Gemm with one row).
//   gemm_local ("L", GPUs): the classic local-memory tiling. A work-group of WN x WM work-items computes a
//     (WM*TM) x (WN*TN) block of C; per BK-deep slice of K it stages the A and B tiles in local memory
//     (coalesced loads: A is packed [K][M], B rows are contiguous), then every work-item accumulates its
//     TM x TN outputs from local memory. Rows/columns of a work-item are strided by WM/WN so neighbouring
//     work-items read and write neighbouring addresses.
//   gemm_reduce ("R", GPUs): a work-group per row for 1-3 columns (matrix-vector products).
// Knobs: TM, TN (the vector one is 4, 8 or 16; the other 1..16), UNROLL_K (k steps per unrolled loop body);
// for gemm_bcast TM (1..16) and NV (1..4); for gemm_local TM, TN (1..8), WM, WN (work-group shape), BK.
// B must be a guarded device buffer (memory.py): partial last blocks read up to TN - 1 (16 * NV - 1)
// floats past it.

// The block of C a work-item of gemm_bcast, gemm_vec_n or gemm_vec_m computes: COLUMNS columns from n0, TM rows
// from m0 = mb * TM, one batch; B, C and Z are moved to that batch (B also to column n0) and a to the packed rows of
// block mb. A work-item past the matrix returns.
#define GEMM_BLOCK(COLUMNS)                                \
    const int n0 = get_global_id(0) * (COLUMNS);           \
    const int mb = get_global_id(1);                       \
    const int m0 = mb * TM;                                \
    if (n0 >= N || m0 >= M)                                \
        return;                                            \
    const size_t batch = get_global_id(2);                 \
    B += batch * b_batch_stride + n0;                      \
    C += batch * M * N;                                    \
    Z += batch * M * N;                                    \
    __global const data_t *a = A + (size_t)mb * K * TM;

#ifdef VEC_N
#define VEC CAT(float, TN)
#define VW TN
#else
#define VEC CAT(float, TM)
#define VW TM
#endif
#define VLOAD CAT(vload, VW)
#define VSTORE CAT(vstore, VW)

// One k step of the full-block loops; the constant-trip inner loop over UNROLL_K steps unrolls fully.
#define STEP_VEC_N(k)                                               \
    {                                                               \
        const VEC x = LOADN(VW, 0, B + (size_t)(k) * N);            \
        FMA_ROWS(acc, a + (k) * TM, x)                              \
    }
#define STEP_VEC_M(k)                                               \
    {                                                               \
        const VEC w = LOADN(VW, 0, a + (size_t)(k) * TM);           \
        __global const data_t *b = B + (size_t)(k) * N;             \
        for (int j = 0; j < TN; ++j)                                \
            acc[j] = MAC(w, (VEC)(LD(b, j)), acc[j]);               \
    }

#if defined(RG)
// gemm_reduce (GPUs, 1-3 columns: a classifier's Gemm is a matrix-vector product): one work-group of RG
// work-items per row of C; each work-item sums a strided part of the K products, the group adds them up in
// local memory. A is [M][K] (rows contiguous: neighbouring work-items read neighbouring weights).
// Work: dim 0 = RG (local RG), dim 1 = M, dim 2 = batch.
__kernel void gemm_reduce(__global const data_t *restrict A, __global const data_t *restrict B,
                          __global const data_t *restrict bias, __global const data_t *restrict Z,
                          __global data_t *restrict C, int M, int N, int K, int b_batch_stride,
                          int has_z, int act, float p0, float p1)
{
    __local float partial[RG];
    const int lid = get_local_id(0);
    const int m = get_global_id(1);
    const size_t batch = get_global_id(2);
    B += batch * b_batch_stride;
    C += batch * M * N;
    Z += batch * M * N;
    __global const data_t *a = A + (size_t)m * K;
    for (int n = 0; n < N; ++n) {
        float sum = 0.0f;
        for (int k = lid; k < K; k += RG)
            sum = MAC(LD(a, k), LD(B, (size_t)k * N + n), sum);
        partial[lid] = sum;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int step = RG / 2; step > 0; step /= 2) {
            if (lid < step)
                partial[lid] += partial[lid + step];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        if (lid == 0) {
            const size_t at = (size_t)m * N + n;
            float v = partial[0] + LD(bias, m);
            FUSED_EPILOGUE(float, v, LD(Z, at), has_z, act, p0, p1)
            ST(C, at, v);
        }
        barrier(CLK_LOCAL_MEM_FENCE);  // partial is reused by the next column
    }
}
#elif defined(WM)
// A: [K][Mp] (Mp = M rounded up to WM*TM, zero-padded); bias zero-padded to Mp.
__kernel void gemm_local(__global const data_t *restrict A, __global const data_t *restrict B,
                         __global const data_t *restrict bias, __global const data_t *restrict Z,
                         __global data_t *restrict C, int M, int N, int K, int b_batch_stride,
                         int has_z, int act, float p0, float p1)
{
    __local float As[BK][WM * TM];
    __local float Bs[BK][WN * TN];
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int n_base = get_group_id(0) * (WN * TN);
    const int m_base = get_group_id(1) * (WM * TM);
    const int mp = (M + WM * TM - 1) / (WM * TM) * (WM * TM);
    const size_t batch = get_global_id(2);
    B += batch * b_batch_stride;
    C += batch * M * N;
    Z += batch * M * N;
    const int lid = ty * WN + tx;

    float acc[TM][TN];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < TN; ++j)
            acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int e = lid; e < BK * WM * TM; e += WM * WN) {  // A tile: BK rows of WM*TM weights
            const int kk = e / (WM * TM), mm = e % (WM * TM);
            As[kk][mm] = k0 + kk < K ? LD(A, (size_t)(k0 + kk) * mp + m_base + mm) : 0.0f;
        }
        for (int e = lid; e < BK * WN * TN; e += WM * WN) {  // B tile: BK rows of WN*TN pixels
            const int kk = e / (WN * TN), nn = e % (WN * TN);
            Bs[kk][nn] = k0 + kk < K && n_base + nn < N ? LD(B, (size_t)(k0 + kk) * N + n_base + nn) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        LOCAL_TILE_FMA(As, Bs, acc)
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < TM; ++i) {
        const int m = m_base + ty + i * WM;
        if (m >= M)
            break;
        for (int j = 0; j < TN; ++j) {
            const int n = n_base + tx + j * WN;
            if (n >= N)
                break;
            const size_t at = (size_t)m * N + n;
            float v = acc[i][j] + LD(bias, m);
            FUSED_EPILOGUE(float, v, LD(Z, at), has_z, act, p0, p1)
            ST(C, at, v);
        }
    }
}
#elif defined(NV)
__kernel void gemm_bcast(__global const data_t *restrict A, __global const data_t *restrict B,
                         __global const data_t *restrict bias, __global const data_t *restrict Z,
                         __global data_t *restrict C, int M, int N, int K, int b_batch_stride,
                         int has_z, int act, float p0, float p1)
{
    GEMM_BLOCK(16 * NV)

    float16 acc[TM][NV];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int v = 0; v < NV; ++v)
            acc[i][v] = (float16)(0.0f);
    // As in gemm_vec_n, a partial last block reads (and ignores) columns past N.
    for (int k = 0; k < K; ++k) {
        float16 x[NV];
#pragma unroll
        for (int v = 0; v < NV; ++v)
            x[v] = LOADN(16, v, B + (size_t)k * N);
#pragma unroll
        for (int i = 0; i < TM; ++i) {
            const float16 w = (float16)(LD(a, k * TM + i));
#pragma unroll
            for (int v = 0; v < NV; ++v)
                acc[i][v] = MAC(w, x[v], acc[i][v]);
        }
    }

    for (int i = 0; i < TM && m0 + i < M; ++i) {
        const float b = LD(bias, m0 + i);
#pragma unroll
        for (int v = 0; v < NV; ++v) {
            const int c0 = n0 + 16 * v;
            if (c0 >= N)
                break;
            const size_t row = (size_t)(m0 + i) * N + c0;
            float16 s = acc[i][v] + (float16)(b);
            STORE_EPILOGUE(float16, 16, s, C, Z, row, min(16, N - c0), has_z, act, p0, p1)
        }
    }
}
#elif defined(VEC_N)
__kernel void gemm_vec_n(__global const data_t *restrict A, __global const data_t *restrict B,
                   __global const data_t *restrict bias, __global const data_t *restrict Z,
                   __global data_t *restrict C, int M, int N, int K, int b_batch_stride,
                   int has_z, int act, float p0, float p1)
{
    GEMM_BLOCK(TN)

    VEC acc[TM];
    for (int i = 0; i < TM; ++i)
        acc[i] = (VEC)(0.0f);

    // A partial last block reads past its row like a full one (into the next row, or the buffer's guard
    // band for the last row: memory.py); the lanes past N are never stored.
    const int valid = min(TN, N - n0);
    int k = 0;
    for (; k + UNROLL_K <= K; k += UNROLL_K)
        for (int u = 0; u < UNROLL_K; ++u)
            STEP_VEC_N(k + u);
    for (; k < K; ++k)
        STEP_VEC_N(k);

    for (int i = 0; i < TM && m0 + i < M; ++i) {
        const size_t row = (size_t)(m0 + i) * N + n0;
        VEC v = acc[i] + (VEC)(LD(bias, m0 + i));
        STORE_EPILOGUE(VEC, TN, v, C, Z, row, valid, has_z, act, p0, p1)
    }
}
#else

// bias is zero-padded to whole TM blocks.
__kernel void gemm_vec_m(__global const data_t *restrict A, __global const data_t *restrict B,
                         __global const data_t *restrict bias, __global const data_t *restrict Z,
                         __global data_t *restrict C, int M, int N, int K, int b_batch_stride,
                         int has_z, int act, float p0, float p1)
{
    GEMM_BLOCK(TN)

    VEC acc[TN];
    for (int j = 0; j < TN; ++j)
        acc[j] = (VEC)(0.0f);
    // As in gemm_vec_n, a partial last block reads (and ignores) up to TN - 1 columns past N.
    const int columns = min(TN, N - n0);
    int k = 0;
    for (; k + UNROLL_K <= K; k += UNROLL_K)
        for (int u = 0; u < UNROLL_K; ++u)
            STEP_VEC_M(k + u);
    for (; k < K; ++k)
        STEP_VEC_M(k);

    const VEC bias_v = LOADN(VW, 0, bias + m0);
    const int rows = min(TM, M - m0);
    for (int j = 0; j < columns; ++j) {
        VEC v = acc[j] + bias_v;
        float lanes[TM];
        VEC z = (VEC)(0.0f);
        if (has_z) {
            for (int i = 0; i < TM; ++i)
                lanes[i] = i < rows ? LD(Z, (size_t)(m0 + i) * N + n0 + j) : 0.0f;
            z = VLOAD(0, lanes);
        }
        FUSED_EPILOGUE(VEC, v, z, has_z, act, p0, p1)
        VSTORE(v, 0, lanes);
        for (int i = 0; i < rows; ++i)
            ST(C, (size_t)(m0 + i) * N + n0 + j, lanes[i]);
    }
}
#endif
