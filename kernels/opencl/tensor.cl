// Data movement: one strided-copy kernel serves Transpose, Slice, Concat (one launch per input), Split,
// Expand, Gather with a scalar index and Reshape copies; plus Gather with an index list and Pad.
// T is the element type (float, uchar, int, long), a build option.
//
// meta for strided_copy: shape[MAX_RANK], src strides[MAX_RANK], dst strides[MAX_RANK], src offset,
// dst offset (elements). Strides may be 0 (broadcast) or negative (reversed slices).

#ifndef T
#define T float
#endif

// Work: dim 0 = blocks of COPY_CHUNK elements of the last axis, dim 1 = the other axes flattened (rows):
// the index arithmetic (divisions) is paid once per chunk, not per element.
#define COPY_CHUNK 16  // the vector paths below use 16-wide vectors

__kernel void strided_copy(__global const T *restrict src, __global T *restrict dst, __constant int *meta, int rows)
{
    const int i0 = get_global_id(0) * COPY_CHUNK;
    const int row = get_global_id(1);
    const int last = meta[MAX_RANK - 1];
    if (i0 >= last || row >= rows)
        return;
    int rest = row;
    int s = meta[3 * MAX_RANK], d = meta[3 * MAX_RANK + 1];
    for (int k = MAX_RANK - 2; k >= 0 && rest; --k) {  // the host merges axes: most leading ones are 1
        const int size = meta[k];
        if (size == 1)
            continue;
        const int coord = rest % size;
        rest /= size;
        s += coord * meta[MAX_RANK + k];
        d += coord * meta[2 * MAX_RANK + k];
    }
    const int src_step = meta[2 * MAX_RANK - 1], dst_step = meta[3 * MAX_RANK - 1];
    const int i_end = min(i0 + COPY_CHUNK, last);
    if (i_end - i0 == COPY_CHUNK && dst_step == 1 && (src_step == 1 || src_step == 2)) {
        // Whole chunks as vectors. Step 2 (YOLOX's Focus slices): the even lanes of [2 i0, 2 i0 + 16) and the
        // odd lanes of [2 i0 + 15, 2 i0 + 31): no element past the last one copied is read.
        __global const T *from = src + s + i0 * src_step;
        if (src_step == 1)
            vstore16(vload16(0, from), 0, dst + d + i0);
        else
            vstore16((CAT(T, 16))(vload16(0, from).even, vload16(0, from + 15).odd), 0, dst + d + i0);
    } else if (src_step == 1 && dst_step == 1) {
        for (int i = i0; i < i_end; ++i)
            dst[d + i] = src[s + i];
    } else {
        for (int i = i0; i < i_end; ++i)
            dst[d + i * dst_step] = src[s + i * src_step];
    }
}

// Gather along one axis viewed as [outer][axis_len][inner]: dst[o][j][i] = src[o][indices[j]][i].
__kernel void gather(__global const T *restrict src, __global const int *restrict indices, __global T *restrict dst,
                     int outer, int axis_len, int inner, int index_count)
{
    const int i = get_global_id(0);
    if (i >= outer * index_count * inner)
        return;
    const int in = i % inner;
    const int j = (i / inner) % index_count;
    const int o = i / (inner * index_count);
    int idx = indices[j];
    if (idx < 0)
        idx += axis_len;
    dst[i] = src[((size_t)o * axis_len + idx) * inner + in];
}

// Every element of dst set to value (constant Pad: the fill, then a strided copy of the input).
__kernel void fill(__global T *restrict dst, int n, float value)
{
    const int i = get_global_id(0);
    if (i < n)
        dst[i] = (T)value;
}

// meta for pad: out shape[MAX_RANK], in shape[MAX_RANK], pads at the start[MAX_RANK].
// mode 0 constant, 1 reflect, 2 edge.
__kernel void pad(__global const T *restrict src, __global T *restrict dst, __constant int *meta, int n, int mode,
                  float value)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    int rest = i, s = 0, stride = 1, inside = 1;
    for (int k = MAX_RANK - 1; k >= 0; --k) {
        const int size = meta[MAX_RANK + k];
        int c = rest % meta[k] - meta[2 * MAX_RANK + k];
        rest /= meta[k];
        if (c < 0 || c >= size) {
            if (mode == 0) {
                inside = 0;
            } else if (mode == 1) {
                const int period = 2 * (size - 1);
                c = period > 0 ? abs(c) % period : 0;
                c = c >= size ? period - c : c;
            } else {
                c = clamp(c, 0, size - 1);
            }
        }
        s += c * stride;
        stride *= size;
    }
    dst[i] = inside ? src[s] : (T)value;
}
