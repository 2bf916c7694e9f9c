// Depthwise 2-D convolution (groups == channels, one filter per channel) with a fused epilogue:
// Y = act(conv(X, W) + bias + Z). The host places window.cl before this file.
//
// Each work-item computes TY output rows x TN consecutive output columns of one channel, with the KH x KW
// filter in registers.
// Knobs: MODE (block: this kernel; rows, flat: below), TN (4, 8, 16), TY (1, 2, 4, 8), TC (flat: channels per
// work-item). KH, KW, SH, SW, DH, DW compile-time.
// Work: dim 0 = column blocks, dim 1 = row blocks, dim 2 = batch * channels.

#ifdef TY  // block and rows modes
// The TY x TN block of one channel whose first input row is iy_first and first input column ix0, into a new
// VEC acc[TY] (bias b, then the taps). Each input row is loaded once per tap and feeds every output row of the
// block that reads it (with TY = 4: 18 vector loads instead of 36); the row/tap pairing is compile-time after
// unrolling. Shared by depthwise and depthwise_rows.
#define DEPTHWISE_BLOCK(acc, X, w, b, keep, iy_first, ix0, H, W)                                 \
    VEC acc[TY];                                                                                \
    _Pragma("unroll") for (int t_ = 0; t_ < TY; ++t_) acc[t_] = (VEC)(b);                       \
    _Pragma("unroll") for (int r_ = 0; r_ < (TY - 1) * SH + (KH - 1) * DH + 1; ++r_)            \
    {                                                                                           \
        const int iy_ = (iy_first) + r_;                                                        \
        if (iy_ < 0 || iy_ >= (H))                                                              \
            continue;                                                                           \
        __global const data_t *row_ = (X) + (size_t)iy_ * (W);                                  \
        _Pragma("unroll") for (int kw_ = 0; kw_ < KW; ++kw_)                                    \
        {                                                                                       \
            const VEC x_ = PADDED_TAP(row_, ix0, kw_, keep);                                    \
            _Pragma("unroll") for (int t_ = 0; t_ < TY; ++t_)                                   \
            {                                                                                   \
                const int dy_ = r_ - t_ * SH;                                                   \
                if (dy_ >= 0 && dy_ % DH == 0 && dy_ / DH < KH)                                 \
                    acc[t_] = MAC((VEC)((w)[(dy_ / DH) * KW + kw_]), x_, acc[t_]);              \
            }                                                                                   \
        }                                                                                       \
    }

__kernel void depthwise(__global const data_t *restrict X, int x_off, __global const data_t *restrict Wt,
                        __global const data_t *restrict bias, __global const data_t *restrict Z,
                        __global data_t *restrict Y, int C, int H, int W, int Ho, int Wo, int pad_t,
                        int pad_l, int has_z, int act, float p0, float p1)
{
    X += x_off;  // X starts the guard before the tensor (memory.py with_front_guard)
    const int x0 = get_global_id(0) * TN;
    const int y0 = get_global_id(1) * TY;
    const int nc = get_global_id(2);
    if (x0 >= Wo || y0 >= Ho || nc >= NC)
        return;
    const int c = nc % C;
    X += (size_t)nc * H * W;
    Y += (size_t)nc * Ho * Wo;
    Z += (size_t)nc * Ho * Wo;

    float w[KH * KW];
    for (int k = 0; k < KH * KW; ++k)
        w[k] = LD(Wt, c * KH * KW + k);

    const int ix0 = x0 * SW - pad_l;
    ROW_MASKS(keep, ix0, W)
    DEPTHWISE_BLOCK(acc, X, w, LD(bias, c), keep, y0 * SH - pad_t, ix0, H, W)
    const int valid = min(TN, Wo - x0);
    for (int t = 0; t < TY && y0 + t < Ho; ++t)
        store_block(acc[t], Y, Z, (size_t)(y0 + t) * Wo + x0, valid, has_z, act, p0, p1);
}

// depthwise_rows: the same block computation, but one work-item walks all the column blocks of its TY
// rows (work: dim 0 = row blocks, dim 1 = batch * channels). On PoCL this halves the time of the large
// planes (112x112, 56x56): the per-work-item set-up (weights, row pointers) is paid once per row block.
__kernel void depthwise_rows(__global const data_t *restrict X, int x_off, __global const data_t *restrict Wt,
                             __global const data_t *restrict bias, __global const data_t *restrict Z,
                             __global data_t *restrict Y, int C, int H, int W, int Ho, int Wo, int pad_t,
                             int pad_l, int has_z, int act, float p0, float p1)
{
    X += x_off;
    const int y0 = get_global_id(0) * TY;
    const int nc = get_global_id(1);
    if (y0 >= Ho || nc >= NC)  // NC = batch * channels: the global size is rounded up to the work-group
        return;
    const int c = nc % C;
    X += (size_t)nc * H * W;
    Y += (size_t)nc * Ho * Wo;
    Z += (size_t)nc * Ho * Wo;

    float w[KH * KW];
    for (int k = 0; k < KH * KW; ++k)
        w[k] = LD(Wt, c * KH * KW + k);
    const float b = LD(bias, c);
    const int iy_first = y0 * SH - pad_t;
    for (int x0 = 0; x0 < Wo; x0 += TN) {
        const int ix0 = x0 * SW - pad_l;
        ROW_MASKS(keep, ix0, W)
        DEPTHWISE_BLOCK(acc, X, w, b, keep, iy_first, ix0, H, W)
        const int valid = min(TN, Wo - x0);
#pragma unroll
        for (int t = 0; t < TY; ++t)
            if (y0 + t < Ho)
                store_block(acc[t], Y, Z, (size_t)(y0 + t) * Wo + x0, valid, has_z, act, p0, p1);
    }
}

#endif

// depthwise_flat: stride 1 and an output plane the size of the input (Ho == H, Wo == W), so tap (kh, kw) of
// output pixel p reads input pixel p + (kh*DH - pad_t)*W + (kw*DW - pad_l) of the flattened plane: TN
// consecutive pixels, also across row ends, are one vector load per tap. The tap masks (padding rows and
// columns, pixels past the plane) depend on the pixels only, so a work-item computes them once and reuses
// them for TC channels. For the small planes (7x7, 14x14, 28x28) where row blocks would be mostly padding.
// Work: dim 0 = pixel blocks, dim 1 = (batch * channels) / TC. Reads reach (KH-1)*W + KW + TN floats past a
// plane, which the planner checks against the guard band.
#ifdef TC
__kernel void depthwise_flat(__global const data_t *restrict X, int x_off, __global const data_t *restrict Wt,
                             __global const data_t *restrict bias, __global const data_t *restrict Z,
                             __global data_t *restrict Y, int C, int H, int W, int Ho, int Wo, int pad_t,
                             int pad_l, int has_z, int act, float p0, float p1)
{
    X += x_off;
    const int first = get_global_id(0) * TN;
    const int nc0 = get_global_id(1) * TC;
    if (first >= H * W || nc0 >= NC)  // NC = batch * channels (a multiple of TC)
        return;
    const int plane = H * W;
    const INTV pixel = IOTA + first;
    const INTV py = pixel / W;
    const INTV px = pixel - py * W;
    INTV keep[KH * KW];
#pragma unroll
    for (int kh = 0; kh < KH; ++kh)
#pragma unroll
        for (int kw = 0; kw < KW; ++kw) {
            const INTV yy = py + (kh * DH - pad_t);
            const INTV xx = px + (kw * DW - pad_l);
            keep[kh * KW + kw] = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W);
        }
    const int valid = min(TN, plane - first);
    for (int cc = 0; cc < TC; ++cc) {
        const int nc = nc0 + cc;
        const int c = nc % C;
        __global const data_t *x = X + (size_t)nc * plane + first;
        __global const data_t *w = Wt + c * KH * KW;
        VEC acc = (VEC)(LD(bias, c));
#pragma unroll
        for (int kh = 0; kh < KH; ++kh)
#pragma unroll
            for (int kw = 0; kw < KW; ++kw) {
                const VEC tap = LOADN(TN, 0, x + (kh * DH - pad_t) * W + (kw * DW - pad_l));
                acc = MAC((VEC)(LD(w, kh * KW + kw)), select((VEC)(0.0f), tap, keep[kh * KW + kw]), acc);
            }
        store_block(acc, Y + (size_t)nc * plane, Z + (size_t)nc * plane, first, valid, has_z, act, p0, p1);
    }
}
#endif
