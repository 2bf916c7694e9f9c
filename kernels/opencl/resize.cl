// Resize of the two trailing axes of NCHW. The host computes, per output row and column, the source
// indices and weights (coordinate_transformation_mode and nearest_mode are applied there, once), so the
// kernel only gathers. Linear: y = (1-wy)((1-wx) a + wx b) + wy((1-wx) c + wx d). Nearest: wy = wx = 0.
// Work: dim 0 = output columns, dim 1 = output rows, dim 2 = batch * channels.

__kernel void resize2d(__global const data_t *restrict X, __global data_t *restrict Y, __global const int *y_index,
                       __global const float *y_weight, __global const int *x_index,
                       __global const float *x_weight, int H, int W, int Ho, int Wo)
{
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    if (ox >= Wo || oy >= Ho)
        return;
    const size_t nc = get_global_id(2);
    __global const data_t *plane = X + nc * H * W;
    const int y0 = y_index[2 * oy], y1 = y_index[2 * oy + 1];
    const int x0 = x_index[2 * ox], x1 = x_index[2 * ox + 1];
    const float wy = y_weight[oy], wx = x_weight[ox];
    const float top = LD(plane, y0 * W + x0) * (1.0f - wx) + LD(plane, y0 * W + x1) * wx;
    const float bottom = LD(plane, y1 * W + x0) * (1.0f - wx) + LD(plane, y1 * W + x1) * wx;
    ST(Y, (nc * Ho + oy) * Wo + ox, top * (1.0f - wy) + bottom * wy);
}

// Nearest upsampling by an integer factor FH of the rows and exactly 2 of the columns (the 2x upsampling of
// YOLO necks), where resize2d's per-output gathers ran at ~5 GB/s: each work-item loads 8 input columns of one
// row as one vector and stores them, each twice, as 16 output columns in the FH output rows.
// Work: dim 0 = blocks of 8 input columns, dim 1 = input rows, dim 2 = batch * channels.
__kernel void upsample_nearest_w2(__global const data_t *restrict X, __global data_t *restrict Y, int H, int W, int FH,
                                  int nc_count)
{
    const int x0 = get_global_id(0) * 8;
    const int iy = get_global_id(1);
    const int nc = get_global_id(2);
    if (x0 >= W || iy >= H || nc >= nc_count)
        return;
    const int Wo = 2 * W;
    __global const data_t *src = X + ((size_t)nc * H + iy) * W + x0;
    __global data_t *dst = Y + ((size_t)nc * H + iy) * FH * Wo + 2 * x0;
    if (x0 + 8 <= W) {
        const float8 v = LOADN(8, 0, src);
        const float16 o = (float16)(v.s0, v.s0, v.s1, v.s1, v.s2, v.s2, v.s3, v.s3, v.s4, v.s4, v.s5, v.s5, v.s6, v.s6,
                                    v.s7, v.s7);
        for (int r = 0; r < FH; ++r)
            STOREN(16, o, 0, dst + (size_t)r * Wo);
    } else {
        for (int j = 0; j < W - x0; ++j) {
            const float s = LD(src, j);
            for (int r = 0; r < FH; ++r) {
                ST(dst, (size_t)r * Wo + 2 * j, s);
                ST(dst, (size_t)r * Wo + 2 * j + 1, s);
            }
        }
    }
}
