// 2-D pooling over NCHW: max and average windows, and global average / max over H*W.
// One output per work-item; PoCL vectorises across the work-items of dimension 0 (output columns).
// Work (pool2d): dim 0 = output columns, dim 1 = output rows, dim 2 = batch * channels.

__kernel void pool2d(__global const data_t *restrict X, __global data_t *restrict Y, int H, int W, int Ho,
                     int Wo, int kh_size, int kw_size, int stride_h, int stride_w, int pad_t, int pad_l,
                     int dil_h, int dil_w, int is_max, int count_include_pad, int pad_h_end, int pad_w_end)
{
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    if (ox >= Wo || oy >= Ho)
        return;
    const size_t nc = get_global_id(2);
    __global const data_t *plane = X + nc * H * W;
    const int iy0 = oy * stride_h - pad_t;
    const int ix0 = ox * stride_w - pad_l;
    // The taps inside the input: kh in [kh_lo, kh_hi), kw in [kw_lo, kw_hi). Loop bounds instead of
    // per-tap tests keep the inner loop branch-free.
    const int kh_lo = iy0 < 0 ? (-iy0 + dil_h - 1) / dil_h : 0;
    const int kw_lo = ix0 < 0 ? (-ix0 + dil_w - 1) / dil_w : 0;
    const int kh_hi = min(kh_size, (H - 1 - iy0) / dil_h + 1);
    const int kw_hi = min(kw_size, (W - 1 - ix0) / dil_w + 1);
    float acc = is_max ? -INFINITY : 0.0f;
    for (int kh = kh_lo; kh < kh_hi; ++kh) {
        __global const data_t *row = plane + (iy0 + kh * dil_h) * W + ix0;
        if (is_max) {
            for (int kw = kw_lo; kw < kw_hi; ++kw)
                acc = fmax(acc, LD(row, kw * dil_w));
        } else {
            for (int kw = kw_lo; kw < kw_hi; ++kw)
                acc += LD(row, kw * dil_w);
        }
    }
    int count = max(kh_hi - kh_lo, 0) * max(kw_hi - kw_lo, 0);
    if (!is_max) {
        if (count_include_pad) {
            // ONNX counts padded positions but not positions past the explicit end padding.
            const int y_end = min(iy0 + (kh_size - 1) * dil_h + 1, H + pad_h_end);
            const int x_end = min(ix0 + (kw_size - 1) * dil_w + 1, W + pad_w_end);
            count = ((y_end - iy0 + dil_h - 1) / dil_h) * ((x_end - ix0 + dil_w - 1) / dil_w);
        }
        acc /= (float)max(count, 1);
    }
    ST(Y, (nc * Ho + oy) * Wo + ox, acc);
}

// Work: dim 0 = batch * channels. Reduces one H*W plane per work-item.
__kernel void global_pool(__global const data_t *restrict X, __global data_t *restrict Y, int hw, int nc_count,
                          int is_max)
{
    const int nc = get_global_id(0);
    if (nc >= nc_count)
        return;
    __global const data_t *plane = X + (size_t)nc * hw;
    float acc = is_max ? -INFINITY : 0.0f;
    for (int i = 0; i < hw; ++i)
        acc = is_max ? fmax(acc, LD(plane, i)) : acc + LD(plane, i);
    ST(Y, nc, is_max ? acc : acc / (float)hw);
}

#ifdef TN
// Vector pooling for windows of any size: each work-item computes TN consecutive output columns of one
// row, every tap one vector load (window.cl, placed before this file) with the lanes outside the row
// replaced by -inf (max) or 0 (average). Knobs: TN; SW (horizontal stride) and DW compile-time.
// Work: dim 0 = column blocks, dim 1 = output rows, dim 2 = batch * channels.
__kernel void pool2d_vec(__global const data_t *restrict X, int x_off, __global data_t *restrict Y, int H, int W, int Ho,
                         int Wo, int kh_size, int kw_size, int stride_h, int pad_t, int pad_l, int dil_h,
                         int is_max, int count_include_pad, int pad_h_end, int pad_w_end)
{
    X += x_off;  // X starts the guard before the tensor (memory.py with_front_guard)
    const int x0 = get_global_id(0) * TN;
    const int oy = get_global_id(1);
    if (x0 >= Wo || oy >= Ho)
        return;
    const size_t nc = get_global_id(2);
    __global const data_t *plane = X + nc * H * W;
    const int iy0 = oy * stride_h - pad_t;
    const int ix0 = x0 * SW - pad_l;
    const VEC fill = is_max ? (VEC)(-INFINITY) : (VEC)(0.0f);
    VEC acc = fill;
    int rows = 0;
    for (int kh = 0; kh < kh_size; ++kh) {
        const int iy = iy0 + kh * dil_h;
        if (iy < 0 || iy >= H)
            continue;
        ++rows;
        __global const data_t *row = plane + (size_t)iy * W;
        for (int kw = 0; kw < kw_size; ++kw) {
            const INTV x = IOTA * SW + (ix0 + kw * DW);
            const VEC v = select(fill, row_tap(row, ix0, kw), (x >= 0) & (x < W));
            acc = is_max ? fmax(acc, v) : acc + v;
        }
    }
    float lanes[TN];
    VSTORE(acc, 0, lanes);
    __global data_t *out = Y + (nc * Ho + oy) * Wo + x0;
    for (int j = 0; j < TN && x0 + j < Wo; ++j) {
        float value = lanes[j];
        if (!is_max) {
            const int ix = ix0 + j * SW;
            int count;
            if (count_include_pad) {  // as pool2d: padded positions count, positions past the end padding not
                const int y_end = min(iy0 + (kh_size - 1) * dil_h + 1, H + pad_h_end);
                const int x_end = min(ix + (kw_size - 1) * DW + 1, W + pad_w_end);
                count = ((y_end - iy0 + dil_h - 1) / dil_h) * ((x_end - ix + DW - 1) / DW);
            } else {
                int columns = 0;
                for (int kw = 0; kw < kw_size; ++kw)
                    columns += ix + kw * DW >= 0 && ix + kw * DW < W;
                count = rows * columns;
            }
            value /= (float)max(count, 1);
        }
        ST(out, j, value);
    }
}

#ifdef KH
// Max pooling without dilation, separably (YOLOX's SPP 5x5/9x9/13x13 with stride 1, SqueezeNet's 3x3 with stride
// 2): each work-item owns TN output columns of one channel over all output rows; the horizontal max of every
// input row is computed once (KW vector taps, lanes outside the row -inf) and kept in a KH-deep shift register,
// from which each output row takes the vertical max: (Hp * KW + Ho * KH) vector ops instead of Ho * KH * KW.
// Knobs: TN; KH, KW, SH, SW compile-time (DW = 1). Work: dim 0 = column blocks, dim 1 = batch * channels.
__kernel void maxpool_rows(__global const data_t *restrict X, int x_off, __global data_t *restrict Y, int H, int W,
                           int Ho, int Wo, int pad_t, int pad_l, int nc_count)
{
    X += x_off;  // X starts the guard before the tensor (memory.py with_front_guard)
    const int x0 = get_global_id(0) * TN;
    if (x0 >= Wo || get_global_id(1) >= nc_count)
        return;
    const size_t nc = get_global_id(1);
    __global const data_t *plane = X + nc * H * W;
    __global data_t *out = Y + nc * Ho * Wo + x0;
    const int ix0 = x0 * SW - pad_l;
    const int valid = min(TN, Wo - x0);
    ROW_MASKS(keep, ix0, W)
    VEC ring[KH];
#pragma unroll
    for (int k = 0; k < KH; ++k)
        ring[k] = (VEC)(-INFINITY);
    // Padded row r is input row r - pad_t; output row oy takes padded rows oy * SH .. oy * SH + KH - 1.
    const int rows = (Ho - 1) * SH + KH;
    for (int r = 0; r < rows; ++r) {
        const int iy = r - pad_t;
        VEC h = (VEC)(-INFINITY);
        if (iy >= 0 && iy < H) {
            __global const data_t *row = plane + (size_t)iy * W;
#pragma unroll
            for (int kw = 0; kw < KW; ++kw)
                h = fmax(h, select((VEC)(-INFINITY), row_tap(row, ix0, kw), keep[kw]));
        }
#pragma unroll
        for (int k = 0; k < KH - 1; ++k)
            ring[k] = ring[k + 1];
        ring[KH - 1] = h;
        const int first = r - (KH - 1);
        if (first < 0 || first % SH)
            continue;
        const int oy = first / SH;
        VEC m = ring[0];
#pragma unroll
        for (int k = 1; k < KH; ++k)
            m = fmax(m, ring[k]);
        if (valid == TN) {
            STOREN(TN, m, 0, out + (size_t)oy * Wo);
        } else {
            float lanes[TN];
            VSTORE(m, 0, lanes);
            for (int j = 0; j < valid; ++j)
                ST(out, (size_t)oy * Wo + j, lanes[j]);
        }
    }
}
#endif
#endif
