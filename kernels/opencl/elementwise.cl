// Element-wise kernels: unary activation chains, binary ops with NumPy broadcasting, (de)quantisation.
// Work: dim 0 = output elements (VW per work-item where vectorised).

#ifndef VW
#define VW 4
#endif
#ifndef QTYPE
#define QTYPE uchar
#endif

#define OP_ADD 0
#define OP_SUB 1
#define OP_MUL 2
#define OP_DIV 3
#define OP_MAX 4
#define OP_MIN 5
#define OP_POW 6

#define VEC CAT(float, VW)

// Up to MAX_CHAIN activations applied in order (a fused chain such as Sigmoid -> Neg).
#define MAX_CHAIN 4

__kernel void unary_chain(__global const data_t *restrict X, __global data_t *restrict Y, int n,
                          __constant int *acts, __constant float *params, int chain_length)
{
    const int i0 = get_global_id(0) * VW;
    if (i0 >= n)
        return;
    if (i0 + VW <= n) {
        VEC v = LOADN(VW, 0, X + i0);
        for (int k = 0; k < chain_length; ++k)
            APPLY_ACTIVATION(VEC, v, acts[k], params[2 * k], params[2 * k + 1]);
        STOREN(VW, v, 0, Y + i0);
    } else {
        for (int i = i0; i < n; ++i) {
            float v = LD(X, i);
            for (int k = 0; k < chain_length; ++k)
                APPLY_ACTIVATION(float, v, acts[k], params[2 * k], params[2 * k + 1]);
            ST(Y, i, v);
        }
    }
}

inline float binary_op(float a, float b, int op)
{
    switch (op) {
    case OP_ADD: return a + b;
    case OP_SUB: return a - b;
    case OP_MUL: return a * b;
    case OP_DIV: return a / b;
    case OP_MAX: return fmax(a, b);
    case OP_MIN: return fmin(a, b);
    default: return pow(a, b);
    }
}

// Same-shape operands (or b a scalar when b_scalar): vectorised.
__kernel void binary_same(__global const data_t *restrict A, __global const data_t *restrict B,
                          __global data_t *restrict Y, int n, int op, int b_scalar, int act, float p0,
                          float p1)
{
    const int i0 = get_global_id(0) * VW;
    if (i0 >= n)
        return;
    for (int i = i0; i < min(i0 + VW, n); ++i) {
        float v = binary_op(LD(A, i), LD(B, b_scalar ? 0 : i), op);
        APPLY_ACTIVATION(float, v, act, p0, p1);
        ST(Y, i, v);
    }
}

// General broadcasting: meta = out shape[MAX_RANK], a strides[MAX_RANK], b strides[MAX_RANK] (0 where
// broadcast), right-aligned and padded with size-1 dims.
__kernel void binary_broadcast(__global const data_t *restrict A, __global const data_t *restrict B,
                               __global data_t *restrict Y, __constant int *meta, int n, int op, int act,
                               float p0, float p1)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    int rest = i, ia = 0, ib = 0;
    for (int d = MAX_RANK - 1; d >= 0; --d) {
        const int coord = rest % meta[d];
        rest /= meta[d];
        ia += coord * meta[MAX_RANK + d];
        ib += coord * meta[2 * MAX_RANK + d];
    }
    float v = binary_op(LD(A, ia), LD(B, ib), op);
    APPLY_ACTIVATION(float, v, act, p0, p1);
    ST(Y, i, v);
}

// QuantizeLinear with a per-tensor scale and zero point: round half to even, saturate to [qmin, qmax].
__kernel void quantize_linear(__global const data_t *restrict X, __global QTYPE *restrict Y, int n, float scale,
                              int zero_point, int qmin, int qmax)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    const float q = rint(LD(X, i) / scale) + (float)zero_point;
    Y[i] = (QTYPE)clamp(q, (float)qmin, (float)qmax);
}

__kernel void dequantize_linear(__global const QTYPE *restrict X, __global data_t *restrict Y, int n, float scale,
                                int zero_point)
{
    const int i = get_global_id(0);
    if (i >= n)
        return;
    ST(Y, i, (float)((int)X[i] - zero_point) * scale);
}

// Half storage (fp16 packs, DATA_HALF) at the host boundary: the host copies float32 tensors in and out, and these
// convert on the device (NumPy's float32 <-> float16 casts cost ~3 ns an element on the host: 1.5 ms for YOLOX's input).
__kernel void half_from_float(__global const float *restrict X, __global data_t *restrict Y, int n)
{
    const int i = get_global_id(0);
    if (i < n)
        ST(Y, i, X[i]);
}

__kernel void float_from_half(__global const data_t *restrict X, __global float *restrict Y, int n)
{
    const int i = get_global_id(0);
    if (i < n)
        Y[i] = LD(X, i);
}
