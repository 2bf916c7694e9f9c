// Direct 2-D convolution (any kernel size, stride, padding, dilation, groups) with a fused epilogue:
// Y = act(conv(X, W) + bias + Z). The host places window.cl before this file.
//
// Each work-item computes TM output channels x TN consecutive output columns of one output row, in TM
// vector registers of width TN; every input vector loaded is used by the TM channels.
// The host packs W as [groups][ceil(Cog/TM)][Cig][KH][KW][TM].
// Knobs: TM (1, 2, 4, 8, 16; with BCAST any 1..16), TN (4, 8, 16), BCAST (0: the TM weights of a tap are one
// vector load broadcast lane by lane, FMA_ROWS; 1: each weight is a broadcast load). KH, KW, SW, DW are
// compile-time so the tap loops unroll.
// Work: dim 0 = column blocks, dim 1 = output rows, dim 2 = batch * groups * channel blocks.

__kernel void conv2d(__global const data_t *restrict X, int x_off, __global const data_t *restrict Wp,
                     __global const data_t *restrict bias, __global const data_t *restrict Z,
                     __global data_t *restrict Y, int C, int H, int W, int Co, int Ho, int Wo, int groups,
                     int cig, int cog, int co_blocks, int stride_h, int pad_t, int pad_l, int dil_h,
                     int has_z, int act, float p0, float p1)
{
    X += x_off;  // X starts the guard before the tensor (memory.py with_front_guard)
    const int x0 = get_global_id(0) * TN;
    const int oy = get_global_id(1);
    if (x0 >= Wo || oy >= Ho)
        return;
    const int z = get_global_id(2);
    const int cb = z % co_blocks;
    const int g = (z / co_blocks) % groups;
    const int n = z / (co_blocks * groups);
    const int co0 = g * cog + cb * TM;  // first output channel of this work-item
    const int co_count = min(TM, cog - cb * TM);

    X += ((size_t)n * C + (size_t)g * cig) * H * W;
    __global const data_t *w = Wp + (size_t)(g * co_blocks + cb) * cig * KH * KW * TM;
    const int iy0 = oy * stride_h - pad_t;
    const int ix0 = x0 * SW - pad_l;
    ROW_MASKS(keep, ix0, W)

    VEC acc[TM];
    for (int i = 0; i < TM; ++i)
        acc[i] = (VEC)(0.0f);
    for (int ci = 0; ci < cig; ++ci) {
        __global const data_t *plane = X + (size_t)ci * H * W;
        for (int kh = 0; kh < KH; ++kh) {
            const int iy = iy0 + kh * dil_h;
            if (iy < 0 || iy >= H)
                continue;
            __global const data_t *row = plane + (size_t)iy * W;
            __global const data_t *wk = w + ((ci * KH + kh) * KW) * TM;
#pragma unroll
            for (int kw = 0; kw < KW; ++kw) {
                const VEC x = PADDED_TAP(row, ix0, kw, keep);
#if BCAST  // each weight broadcast from memory (gemm.cl gemm_bcast): no lane swizzles, any TM
#pragma unroll
                for (int i = 0; i < TM; ++i)
                    acc[i] = MAC((VEC)(LD(wk, kw * TM + i)), x, acc[i]);
#else
                FMA_ROWS(acc, wk + kw * TM, x)
#endif
            }
        }
    }
    const int valid = min(TN, Wo - x0);
    for (int i = 0; i < co_count; ++i) {
        const size_t out = (((size_t)n * Co + co0 + i) * Ho + oy) * Wo + x0;
        store_block(acc[i] + (VEC)(LD(bias, co0 + i)), Y, Z, out, valid, has_z, act, p0, p1);
    }
}
