// Image pre-processing: a packed HxWx3 uint8 RGB frame -> the network input tensor, bit-exact with PIL's
// Image.resize(BILINEAR) followed by edgeinfer.pipelines.preprocess.to_tensor.
//
// PIL resizes in two separable passes with 22-bit fixed-point weights and rounds to uint8 between them, so
// we do the same, in the order PIL picks (horizontal first, or vertical first when the height shrinks much
// more than the width; the host decides). resample_first writes the rounded first pass into a small scratch
// image (only the rows/columns the output needs); resample_store does the second pass, letterbox placement
// and padding, channel order, scale/mean/std (a host-computed LUT, so float results equal NumPy's bit for
// bit), layout and dtype. The host computes the weight tables as Pillow's Resample.c does.
//
// A weight table row t holds bounds[2t] (first input pixel along the filtered axis), bounds[2t + 1] (the
// tap count) and weights[t * ksize + i] (1.22 fixed point).
//
// Build option: OUT_FLOAT = 1 writes float through the LUT, 0 writes the raw uint8 pixels.

#if OUT_FLOAT
#define OUT_T data_t
// lut[c * 256 + p] = (p * scale - mean[c]) / std[c], computed by NumPy in float32 (stored as half in fp16 packs).
#define PUT(o, i, p, c) ST(o, i, lut[(c) * 256 + (p)])
#else
#define OUT_T uchar
#define PUT(o, i, p, c) ((o)[i] = (uchar)(p))
#endif

#define PRECISION_BITS 22

// One output pixel of one pass: n taps of RGB starting at src, `step` bytes apart, rounded and clamped to
// 0..255 like PIL's clip8 (weights may sum slightly above 1 after rounding).
inline int3 filter3(__global const uchar *src, int step, __global const int *k, int n)
{
    int3 s = (int3)(1 << (PRECISION_BITS - 1));
    for (int i = 0; i < n; ++i, src += step)
        s += convert_int3(vload3(0, src)) * k[i];
    return clamp(s >> PRECISION_BITS, 0, 255);
}

// First pass, frame -> scratch (tw x th RGB). Work: dim 0 = scratch column, dim 1 = scratch row.
// Filters along y if `vertical`, else along x; bounds are frame coordinates, and `off` is the frame
// coordinate of scratch column/row 0 along the other axis.
__kernel void resample_first(__global const uchar *restrict frame, int frame_w, int vertical, int off,
                             __global const int *restrict bounds, __global const int *restrict weights,
                             int ksize, __global uchar *restrict tmp, int tw, int th)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= tw || y >= th)
        return;
    const int t = vertical ? y : x;
    const int sx = vertical ? off + x : bounds[2 * t];
    const int sy = vertical ? bounds[2 * t] : off + y;
    __global const uchar *src = frame + ((size_t)sy * frame_w + sx) * 3;
    const int3 p = filter3(src, vertical ? 3 * frame_w : 3, weights + t * ksize, bounds[2 * t + 1]);
    vstore3(convert_uchar3(p), (size_t)y * tw + x, tmp);
}

// Second pass, scratch -> tensor. Work: dim 0 = output column, dim 1 = output row. The resized window
// lands at (px, py) with size (pw, ph); every other pixel is `pad`. Filters along y if `vertical`, else
// along x; bounds are scratch coordinates. Output element (c, y, x) is at c * cs + y * ys + x * xs.
__kernel void resample_store(__global const uchar *restrict tmp, int tw, int vertical,
                             __global const int *restrict bounds, __global const int *restrict weights,
                             int ksize, int px, int py, int pw, int ph, int pad, int bgr,
                             __constant float *lut, int cs, int ys, int xs, int out_w, int out_h,
                             __global OUT_T *restrict out)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    if (x >= out_w || y >= out_h)
        return;
    int3 p = (int3)(pad);
    const int u = x - px, v = y - py;
    if (u >= 0 && u < pw && v >= 0 && v < ph) {
        const int t = vertical ? v : u;
        const int sx = vertical ? u : bounds[2 * t];
        const int sy = vertical ? bounds[2 * t] : v;
        p = filter3(tmp + ((size_t)sy * tw + sx) * 3, vertical ? 3 * tw : 3, weights + t * ksize, bounds[2 * t + 1]);
    }
    if (bgr)
        p = p.zyx;
    __global OUT_T *o = out + y * ys + x * xs;
    PUT(o, 0, p.x, 0);
    PUT(o, cs, p.y, 1);
    PUT(o, 2 * cs, p.z, 2);
}
