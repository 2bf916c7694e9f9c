// Depthwise 2-D convolution (groups == channels, one filter per channel) with a fused epilogue:
// Y = act(conv(X, W) + bias + Z). The host places window.cl before this file.
//
// Each work-item computes TY output rows x TN consecutive output columns of one channel, with the KH x KW
// filter in registers.
// Knobs: TN (4, 8, 16), TY (1, 2, 4). KH, KW, SH, SW, DH, DW compile-time.
// Work: dim 0 = column blocks, dim 1 = row blocks, dim 2 = batch * channels.

__kernel void depthwise(__global const float *restrict X, int x_off, __global const float *restrict Wt,
                        __global const float *restrict bias, __global const float *restrict Z,
                        __global float *restrict Y, int C, int H, int W, int Ho, int Wo, int pad_t,
                        int pad_l, int has_z, int act, float p0, float p1)
{
    X += x_off;  // X starts the guard before the tensor (memory.py with_front_guard)
    const int x0 = get_global_id(0) * TN;
    const int y0 = get_global_id(1) * TY;
    if (x0 >= Wo || y0 >= Ho)
        return;
    const int nc = get_global_id(2);
    const int c = nc % C;
    X += (size_t)nc * H * W;
    Y += (size_t)nc * Ho * Wo;
    Z += (size_t)nc * Ho * Wo;

    float w[KH * KW];
    for (int k = 0; k < KH * KW; ++k)
        w[k] = Wt[c * KH * KW + k];

    const int ix0 = x0 * SW - pad_l;
    ROW_MASKS(keep, ix0, W)
    VEC acc[TY];
    for (int t = 0; t < TY; ++t)
        acc[t] = (VEC)(bias[c]);
    // Each input row is loaded once per tap and feeds every output row of the block that reads it (with
    // TY = 4 that is 18 vector loads instead of 36); the row/tap pairing is compile-time after unrolling.
    const int iy_first = y0 * SH - pad_t;
#pragma unroll
    for (int r = 0; r < (TY - 1) * SH + (KH - 1) * DH + 1; ++r) {
        const int iy = iy_first + r;
        if (iy < 0 || iy >= H)
            continue;
        __global const float *row = X + (size_t)iy * W;
#pragma unroll
        for (int kw = 0; kw < KW; ++kw) {
            const VEC x = PADDED_TAP(row, ix0, kw, keep);
#pragma unroll
            for (int t = 0; t < TY; ++t) {
                const int dy = r - t * SH;
                if (dy >= 0 && dy % DH == 0 && dy / DH < KH)
                    acc[t] = fma((VEC)(w[(dy / DH) * KW + kw]), x, acc[t]);
            }
        }
    }
    const int valid = min(TN, Wo - x0);
    for (int t = 0; t < TY && y0 + t < Ho; ++t)
        store_block(acc[t], Y, Z, (size_t)(y0 + t) * Wo + x0, valid, has_z, act, p0, p1);
}
