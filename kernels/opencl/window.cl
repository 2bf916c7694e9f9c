// Row taps shared by the direct and depthwise convolution templates (the host places this file between
// common.cl and the template). Needs TN, SW, KW, DW (outputs per work-item, horizontal stride, kernel
// width, horizontal dilation).
//
// A work-item computes TN consecutive output columns; for kernel tap kw it needs the TN input pixels
// ix0 + j*SW + kw*DW. They are always read with one vector load, also where some of them fall in the
// zero padding: those lanes are then replaced by 0 with a select. The load itself may reach up to
// GUARD_FLOATS past either end of the tensor, which is safe because the executor surrounds every device
// buffer with that much slack (executor.py GUARD_BYTES). One branch-free code path for every block:
// on PoCL, kernels with a separate scalar path for the padded blocks ran 2-3x slower overall, and a
// separate launch for the edge columns cost ~9 ns per output (scalar, 9 taps with tests).

#ifdef TN
#define VEC CAT(float, TN)
#define VLOAD CAT(vload, TN)
#define VSTORE CAT(vstore, TN)
#define INTV CAT(int, TN)
#if TN == 4
#define IOTA ((int4)(0, 1, 2, 3))
#elif TN == 8
#define IOTA ((int8)(0, 1, 2, 3, 4, 5, 6, 7))
#else
#define IOTA ((int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#endif

// Stride 2: load 2*TN pixels as one vector (two for TN 16) and keep the even lanes.
#if SW == 2 && TN == 4
#define PAIRS 8
#elif SW == 2 && TN == 8
#define PAIRS 16
#endif

// The TN input pixels that tap kw reads for the block whose first input column is ix (no padding test).
inline VEC row_tap(__global const data_t *row, int ix, int kw)
{
#if SW == 1
    return LOADN(TN, 0, row + ix + kw * DW);
#elif defined(PAIRS)
    return LOADN(PAIRS, 0, row + ix + kw * DW).even;
#elif SW == 2 && TN == 16  // two 16-wide loads, even lanes of each (the stems' stride-2 3x3 convolutions)
    __global const data_t *p = row + ix + kw * DW;
    return (float16)(LOADN(16, 0, p).even, LOADN(16, 1, p).even);
#else
    float lanes[TN];
#pragma unroll
    for (int j = 0; j < TN; ++j)
        lanes[j] = LD(row, ix + j * SW + kw * DW);
    return VLOAD(0, lanes);
#endif
}

// Per tap kw, which of the block's TN lanes read inside the row [0, W): computed once per work-item
// (they do not depend on the input row or channel) into a private array indexed by compile-time kw.
#define ROW_MASKS(keep, ix, W)                                      \
    INTV keep[KW];                                                  \
    _Pragma("unroll") for (int kw_ = 0; kw_ < KW; ++kw_)            \
    {                                                               \
        const INTV x_ = IOTA * SW + ((ix) + kw_ * DW);              \
        keep[kw_] = (x_ >= 0) & (x_ < (W));                         \
    }

// row_tap with the lanes outside the row set to 0 (zero padding). NaN-safe: a select, not a product.
#define PADDED_TAP(row, ix, kw, keep) select((VEC)(0.0f), row_tap(row, ix, kw), keep[kw])

// Writes act(v + Z) (has_z 1), act(v) + Z (has_z 2, a residual Add after the activation, executor.py) or act(v)
// for the outputs of one block that exist (valid of them, TN for all but the last).
inline void store_block(VEC v, __global data_t *Y, __global const data_t *Z, size_t out, int valid, int has_z,
                        int act, float p0, float p1)
{
    STORE_EPILOGUE(VEC, TN, v, Y, Z, out, valid, has_z, act, p0, p1)
}
#endif
