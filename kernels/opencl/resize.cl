// Resize of the two trailing axes of NCHW. The host computes, per output row and column, the source
// indices and weights (coordinate_transformation_mode and nearest_mode are applied there, once), so the
// kernel only gathers. Linear: y = (1-wy)((1-wx) a + wx b) + wy((1-wx) c + wx d). Nearest: wy = wx = 0.
// Work: dim 0 = output columns, dim 1 = output rows, dim 2 = batch * channels.

__kernel void resize2d(__global const float *restrict X, __global float *restrict Y, __global const int *y_index,
                       __global const float *y_weight, __global const int *x_index,
                       __global const float *x_weight, int H, int W, int Ho, int Wo)
{
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    if (ox >= Wo || oy >= Ho)
        return;
    const size_t nc = get_global_id(2);
    __global const float *plane = X + nc * H * W;
    const int y0 = y_index[2 * oy], y1 = y_index[2 * oy + 1];
    const int x0 = x_index[2 * ox], x1 = x_index[2 * ox + 1];
    const float wy = y_weight[oy], wx = x_weight[ox];
    const float top = plane[y0 * W + x0] * (1.0f - wx) + plane[y0 * W + x1] * wx;
    const float bottom = plane[y1 * W + x0] * (1.0f - wx) + plane[y1 * W + x1] * wx;
    Y[(nc * Ho + oy) * Wo + ox] = top * (1.0f - wy) + bottom * wy;
}
