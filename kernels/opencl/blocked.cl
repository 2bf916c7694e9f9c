// Convolutions on the channel-blocked layout NCHW16c: a tensor [N][C][H][W] is stored as
// [N][ceil(C/16)][H][W][16], the 16 channels of one block and one pixel being one float16 vector (lanes past C
// hold finite values that no kernel reads back into a real channel). On CPUs (PoCL) this turns depthwise taps
// into aligned vector loads without masks and lets a 1x1 or kxk conv broadcast one input value against a vector
// of 16 output channels' weights: ~2.5x faster depthwise layers and 400+ GFLOP/s GEMMs on the development VM
// (docs/notes-opencl.md, session 3). The layout pass (edgeinfer/backends/opencl/layout.py) decides which
// tensors are blocked and inserts the conversions.
//
// Every conv kernel: Y = act(conv(X) + bias + Z) (FUSED_EPILOGUE), Y and Z blocked. Weights are packed by
// kernels_blocked.py with 16 output channels innermost and zero rows for the padded output channels.
// Knobs: TP pixels x NB output-channel blocks per work-item (conv_pw16, conv_direct16); TW pixels x TY rows
// (conv_dw16). IN_BLOCKED: X blocked (1) or plain NCHW (0, e.g. a 3-channel image into the stem).

// ACT (ACT_D: the depthwise part of conv_sep16), when the planner defines it, is the activation code of the conv:
// the epilogue then compiles to that one case. The runtime switch over every activation costs even a ReLU conv
// (measured on PoCL: a depthwise layer 0.071 ms with the switch, 0.054 ms without) and a SiLU one more.
#ifdef ACT
#define ACT_OF(act) ACT
#else
#define ACT_OF(act) (act)
#endif
#ifdef ACT_D
#define ACT_D_OF(act) ACT_D
#else
#define ACT_D_OF(act) (act)
#endif

#define BLOCKED_STORE(v, Y, Z, at, has_z, act, p0, p1)                           \
    {                                                                             \
        float16 s_ = (v);                                                         \
        FUSED_EPILOGUE(float16, s_, vload16((at), (Z)), has_z, ACT_OF(act), p0, p1) \
        vstore16(s_, (at), (Y));                                                  \
    }

#ifdef TP
#if IN_BLOCKED
#define X_PLANE_FLOATS(C, P) ((size_t)(((C) + 15) / 16) * (P) * 16)
#define XS 16  // distance between neighbouring pixels of one channel
#else
#define X_PLANE_FLOATS(C, P) ((size_t)(C) * (P))
#define XS 1
#endif

// The NB x TP accumulators' k-loop of a 1x1 conv: channel k of pixels p0.., times 16 output channels each.
// COND(t) says whether pixel t is inside the tensor (constant-true on whole blocks, so it unrolls away).
#define POINTWISE_K_LOOP(COND)                                                              \
    for (int k = 0; k < C; ++k) {                                                           \
        __global const float *xs = X + X_AT(k, p0);                                         \
        float16 wv[NB];                                                                     \
        _Pragma("unroll") for (int j = 0; j < NB; ++j) wv[j] = vload16((cb0 + j) * C + k, Wt); \
        _Pragma("unroll") for (int t = 0; t < TP; ++t) {                                    \
            if (COND(t)) {                                                                  \
                const float16 xb = (float16)(xs[t * XS]);                                   \
                _Pragma("unroll") for (int j = 0; j < NB; ++j) acc[j][t] = fma(xb, wv[j], acc[j][t]); \
            }                                                                               \
        }                                                                                   \
    }
#if IN_BLOCKED
#define X_AT(k, p) ((((size_t)((k) >> 4) * P + (p)) << 4) + ((k) & 15))
#else
#define X_AT(k, p) ((size_t)(k) * P + (p))
#endif
// Declares the NB x TP accumulators acc of output blocks cb0.., each starting at its block's bias.
#define BIAS_TILE(acc)                                                                       \
    float16 acc[NB][TP];                                                                     \
    _Pragma("unroll") for (int j_ = 0; j_ < NB; ++j_) {                                      \
        const float16 b_ = vload16(cb0 + j_, bias);                                          \
        _Pragma("unroll") for (int t_ = 0; t_ < TP; ++t_) acc[j_][t_] = b_;                  \
    }
#define ALWAYS(t) 1
#define INSIDE(t) ((t) < np)

// The kernels that walk one output row in chunks of TP pixels for NB output blocks (conv_direct16, conv_sep16).
// Work: dim 0 = output rows, dim 1 = groups of NB output blocks, dim 2 = batch; X advances X_FLOATS per image.
#define ROW_WALK_BEGIN(X_FLOATS)                                 \
    const int oy = get_global_id(0);                             \
    const int cb0 = get_global_id(1) * NB;                       \
    const int n = get_global_id(2);                              \
    if (oy >= Ho || cb0 >= CBO)                                  \
        return;                                                  \
    X += n * (X_FLOATS);                                         \
    Y += (size_t)n * CBO * Ho * Wo * 16;                         \
    Z += (size_t)n * CBO * Ho * Wo * 16;
// One chunk's accumulators (at the bias), its pixel count np, its first input column ix0, and whether every tap
// of it falls inside the row (the chunk then skips the column checks).
#define ROW_CHUNK_BEGIN(ox0)                                                                         \
    BIAS_TILE(acc)                                                                                   \
    const int np = min(TP, Wo - (ox0));                                                              \
    const int ix0 = (ox0) * SW - pad_l;                                                              \
    const bool interior = np == TP && ix0 >= 0 && ix0 + (TP - 1) * SW + (KW - 1) * DW < W;
#define ROW_CHUNK_STORE(ox0)                                                                           \
    _Pragma("unroll") for (int j = 0; j < NB; ++j)                                                     \
    _Pragma("unroll") for (int t = 0; t < TP; ++t)                                                     \
        if (cb0 + j < CBO && t < np)                                                                   \
            BLOCKED_STORE(acc[j][t], Y, Z, ((size_t)(cb0 + j) * Ho + oy) * Wo + (ox0) + t, has_z, act, \
                          p0_, p1_)

// 1x1 convolution, stride 1, no padding: P = H*W pixels in a row, no row ends to care about.
// Work: dim 0 = pixel blocks of TP, dim 1 = output channel block groups of NB, dim 2 = batch.
__kernel void conv_pw16(__global const float *restrict X, __global const float *restrict Wt,
                        __global const float *restrict bias, __global const float *restrict Z,
                        __global float *restrict Y, int C, int P, int CBO, int has_z, int act, float p0_,
                        float p1_)
{
    const int p0 = get_global_id(0) * TP;
    const int cb0 = get_global_id(1) * NB;
    const int n = get_global_id(2);
    if (p0 >= P || cb0 >= CBO)
        return;
    X += n * X_PLANE_FLOATS(C, P);
    Y += (size_t)n * CBO * P * 16;
    Z += (size_t)n * CBO * P * 16;
    BIAS_TILE(acc)
    const int np = min(TP, P - p0);
    if (np == TP) {
        POINTWISE_K_LOOP(ALWAYS)
    } else {
        POINTWISE_K_LOOP(INSIDE)
    }
    // Unrolled with guards, not loops to np: indexing acc with a loop bound known only at run time cost
    // conv_direct16 ~4% of SqueezeNet (its stores were such loops until session 4).
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
        for (int t = 0; t < TP; ++t)
            if (cb0 + j < CBO && t < np)
                BLOCKED_STORE(acc[j][t], Y, Z, (size_t)(cb0 + j) * P + p0 + t, has_z, act, p0_, p1_)
}

// Direct KHxKW convolution (group 1), any stride, padding and dilation. A work-item walks one output row in
// chunks of TP pixels for NB output-channel blocks; chunks whose taps all fall inside the row skip the column
// checks. Weights: [CBO][KH][C][KW][16]. Work: dim 0 = output rows, dim 1 = block groups of NB, dim 2 = batch.
__kernel void conv_direct16(__global const float *restrict X, __global const float *restrict Wt,
                            __global const float *restrict bias, __global const float *restrict Z,
                            __global float *restrict Y, int C, int H, int W, int Ho, int Wo, int CBO, int pad_t,
                            int pad_l, int has_z, int act, float p0_, float p1_)
{
    const int P = H * W;  // X_AT's plane size
    ROW_WALK_BEGIN(X_PLANE_FLOATS(C, P))
    for (int ox0 = 0; ox0 < Wo; ox0 += TP) {
        ROW_CHUNK_BEGIN(ox0)
        for (int kh = 0; kh < KH; ++kh) {
            const int iy = oy * SH - pad_t + kh * DH;
            if (iy < 0 || iy >= H)
                continue;
            for (int ci = 0; ci < C; ++ci) {
                __global const float *row = X + X_AT(ci, iy * W);
                __global const float *wk = Wt + ((((size_t)cb0 * KH + kh) * C + ci) * KW) * 16;
#pragma unroll
                for (int kw = 0; kw < KW; ++kw) {
                    float16 wv[NB];
#pragma unroll
                    for (int j = 0; j < NB; ++j)
                        wv[j] = vload16((size_t)j * KH * C * KW + kw, wk);
                    if (interior) {
#pragma unroll
                        for (int t = 0; t < TP; ++t) {
                            const float16 xb = (float16)(row[(ix0 + t * SW + kw * DW) * XS]);
#pragma unroll
                            for (int j = 0; j < NB; ++j)
                                acc[j][t] = fma(xb, wv[j], acc[j][t]);
                        }
                    } else {
#pragma unroll
                        for (int t = 0; t < TP; ++t) {
                            const int ix = ix0 + t * SW + kw * DW;
                            if (t < np && ix >= 0 && ix < W) {
                                const float16 xb = (float16)(row[ix * XS]);
#pragma unroll
                                for (int j = 0; j < NB; ++j)
                                    acc[j][t] = fma(xb, wv[j], acc[j][t]);
                            }
                        }
                    }
                }
            }
        }
        ROW_CHUNK_STORE(ox0)
    }
}
#endif

#ifdef TW
// Depthwise KHxKW convolution on blocked X (CB blocks): one work-item computes TY output rows of one channel
// block, walking the columns in chunks of TW pixels. Interior chunks load each input pixel of a row once
// ((TW-1)*SW + KW aligned vector loads for TW*KW FMAs); edge chunks check every tap.
// Weights: [CB][KH*KW][16]. Work: dim 0 = row blocks of TY, dim 1 = channel blocks, dim 2 = batch.
__kernel void conv_dw16(__global const float *restrict X, __global const float *restrict Wt,
                        __global const float *restrict bias, __global const float *restrict Z,
                        __global float *restrict Y, int CB, int H, int W, int Ho, int Wo, int pad_t, int pad_l,
                        int has_z, int act, float p0_, float p1_)
{
    const int oy0 = get_global_id(0) * TY;
    const int cb = get_global_id(1);
    const int n = get_global_id(2);
    if (oy0 >= Ho || cb >= CB)
        return;
    float16 w[KH * KW];
#pragma unroll
    for (int k = 0; k < KH * KW; ++k)
        w[k] = vload16(cb * KH * KW + k, Wt);
    const float16 b = vload16(cb, bias);
    X += ((size_t)n * CB + cb) * H * W * 16;
    const size_t out_plane = ((size_t)n * CB + cb) * Ho * Wo;
    for (int ox0 = 0; ox0 < Wo; ox0 += TW) {
        float16 acc[TY][TW];
#pragma unroll
        for (int u = 0; u < TY; ++u)
#pragma unroll
            for (int t = 0; t < TW; ++t)
                acc[u][t] = b;
        const int np = min(TW, Wo - ox0);
        const int ix0 = ox0 * SW - pad_l;
        const bool interior = np == TW && ix0 >= 0 && ix0 + (TW - 1) * SW + (KW - 1) * DW < W;
#pragma unroll
        for (int u = 0; u < TY; ++u) {
#pragma unroll
            for (int kh = 0; kh < KH; ++kh) {
                const int iy = (oy0 + u) * SH - pad_t + kh * DH;
                if (iy < 0 || iy >= H)
                    continue;
                __global const float *row = X + (size_t)iy * W * 16;
                if (interior && DW == 1) {
#pragma unroll
                    for (int i = 0; i < (TW - 1) * SW + KW; ++i) {
                        const float16 x = vload16(ix0 + i, row);
#pragma unroll
                        for (int t = 0; t < TW; ++t) {
                            const int kw = i - t * SW;
                            if (kw >= 0 && kw < KW)
                                acc[u][t] = fma(w[kh * KW + kw], x, acc[u][t]);
                        }
                    }
                } else {
#pragma unroll
                    for (int t = 0; t < TW; ++t)
#pragma unroll
                        for (int kw = 0; kw < KW; ++kw) {
                            const int ix = ix0 + t * SW + kw * DW;
                            if (t < np && ix >= 0 && ix < W)
                                acc[u][t] = fma(w[kh * KW + kw], vload16(ix, row), acc[u][t]);
                        }
                }
            }
        }
#pragma unroll
        for (int u = 0; u < TY; ++u)
#pragma unroll
            for (int t = 0; t < TW; ++t)
                if (oy0 + u < Ho && t < np)
                    BLOCKED_STORE(acc[u][t], Y, Z, out_plane + (size_t)(oy0 + u) * Wo + ox0 + t, has_z, act, p0_,
                                  p1_)
    }
}
#endif

#ifdef SEP
// A depthwise-separable pair in one pass: Y = act(pointwise(act_d(depthwise(X) + bias_d)) + bias + Z). The
// depthwise output never reaches memory: a work-item computes it for TP pixels of one output row, one channel
// block at a time, and feeds its 16 lanes straight into the NB x TP pointwise accumulators (as conv_pw16 does
// with its input). Groups of NB output blocks each recompute the depthwise part, so layout.py fuses only pairs
// with few output blocks. Padded depthwise channels come out finite (zero weights and bias) and meet zero rows
// of Wp. Wd: [CB][KH*KW][16]; Wp: [CBO'][CB*16][16]. Work: dim 0 = output rows, dim 1 = groups of NB output
// blocks, dim 2 = batch.
__kernel void conv_sep16(__global const float *restrict X, __global const float *restrict Wd,
                         __global const float *restrict bias_d, __global const float *restrict Wp,
                         __global const float *restrict bias, __global const float *restrict Z,
                         __global float *restrict Y, int CB, int H, int W, int Ho, int Wo, int CBO, int pad_t,
                         int pad_l, int act_d, float d0_, float d1_, int has_z, int act, float p0_, float p1_)
{
    ROW_WALK_BEGIN((size_t)CB * H * W * 16)
    const int K = CB * 16;  // pointwise input channels, padding included
    for (int ox0 = 0; ox0 < Wo; ox0 += TP) {
        ROW_CHUNK_BEGIN(ox0)
        for (int cb = 0; cb < CB; ++cb) {
            float16 d[TP];
            const float16 bd = vload16(cb, bias_d);
#pragma unroll
            for (int t = 0; t < TP; ++t)
                d[t] = bd;
            __global const float *plane = X + (size_t)cb * H * W * 16;
            for (int kh = 0; kh < KH; ++kh) {
                const int iy = oy * SH - pad_t + kh * DH;
                if (iy < 0 || iy >= H)
                    continue;
                __global const float *row = plane + (size_t)iy * W * 16;
                float16 wv[KW];
#pragma unroll
                for (int kw = 0; kw < KW; ++kw)
                    wv[kw] = vload16((cb * KH + kh) * KW + kw, Wd);
                if (interior && DW == 1) {  // each input pixel of the row loaded once
#pragma unroll
                    for (int i = 0; i < (TP - 1) * SW + KW; ++i) {
                        const float16 xv = vload16(ix0 + i, row);
#pragma unroll
                        for (int t = 0; t < TP; ++t) {
                            const int kw = i - t * SW;
                            if (kw >= 0 && kw < KW)
                                d[t] = fma(wv[kw], xv, d[t]);
                        }
                    }
                } else {
#pragma unroll
                    for (int kw = 0; kw < KW; ++kw)
#pragma unroll
                        for (int t = 0; t < TP; ++t) {
                            const int ix = ix0 + t * SW + kw * DW;
                            if (t < np && ix >= 0 && ix < W)
                                d[t] = fma(wv[kw], vload16(ix, row), d[t]);
                        }
                }
            }
            float lanes[TP][16];
#pragma unroll
            for (int t = 0; t < TP; ++t) {
                APPLY_ACTIVATION(float16, d[t], ACT_D_OF(act_d), d0_, d1_);
                vstore16(d[t], 0, lanes[t]);
            }
#pragma unroll
            for (int l = 0; l < 16; ++l) {
                float16 wv[NB];
#pragma unroll
                for (int j = 0; j < NB; ++j)
                    wv[j] = vload16((size_t)(cb0 + j) * K + cb * 16 + l, Wp);
#pragma unroll
                for (int t = 0; t < TP; ++t) {
                    const float16 xb = (float16)(lanes[t][l]);
#pragma unroll
                    for (int j = 0; j < NB; ++j)
                        acc[j][t] = fma(xb, wv[j], acc[j][t]);
                }
            }
        }
        ROW_CHUNK_STORE(ox0)
    }
}
#endif

// Writes the first `valid` lanes of v to y[0], y[stride], ... (plain channels: NCHW planes or a 1x1 output).
#define STORE_PLAIN_LANES(v, y, stride, valid)          \
    {                                                   \
        float lanes_[16];                               \
        vstore16((v), 0, lanes_);                       \
        for (int l_ = 0; l_ < (valid); ++l_)            \
            (y)[(size_t)l_ * (stride)] = lanes_[l_];    \
    }

// Layout conversions at the edges of a blocked region. Work: dim 0 = pixels, dim 1 = channel blocks,
// dim 2 = batch. Lanes past C are written as zeros.
#define CONVERSION_BEGIN                  \
    const int p = get_global_id(0);       \
    const int cb = get_global_id(1);      \
    const int n = get_global_id(2);       \
    const int CB = (C + 15) / 16;         \
    if (p >= P || cb >= CB)               \
        return;

__kernel void to_nchw16c(__global const float *restrict X, __global float *restrict Y, int C, int P)
{
    CONVERSION_BEGIN
    float lanes[16];
    __global const float *x = X + ((size_t)n * C + cb * 16) * P + p;
#pragma unroll
    for (int c = 0; c < 16; ++c)
        lanes[c] = cb * 16 + c < C ? x[(size_t)c * P] : 0.0f;
    vstore16(vload16(0, lanes), ((size_t)n * CB + cb) * P + p, Y);
}

__kernel void from_nchw16c(__global const float *restrict X, __global float *restrict Y, int C, int P)
{
    CONVERSION_BEGIN
    STORE_PLAIN_LANES(vload16(((size_t)n * CB + cb) * P + p, X), Y + ((size_t)n * C + cb * 16) * P + p, P,
                      min(16, C - cb * 16))
}

// MaxPool on blocked X (padding taps skipped, as the max ignores them). A work-item walks one output row of one
// channel block. Work: dim 0 = output rows, dim 1 = batch * channel blocks.
#ifdef POOL
__kernel void maxpool16(__global const float *restrict X, __global float *restrict Y, int H, int W, int Ho, int Wo,
                        int pad_t, int pad_l, int NCB)
{
    const int oy = get_global_id(0);
    const int ncb = get_global_id(1);
    if (oy >= Ho || ncb >= NCB)
        return;
    X += (size_t)ncb * H * W * 16;
    Y += ((size_t)ncb * Ho + oy) * Wo * 16;
    const int iy0 = oy * SH - pad_t;
#ifdef W_CACHE
    // W_CACHE == W: the maxima over the window's rows of every input column first, then the maxima of KW of those
    // per output pixel: KH*W + KW*Wo loads instead of KH*KW*Wo (YOLOX's 13x13 SPP pools: 6.5x fewer).
    float16 column[W_CACHE];
    for (int x = 0; x < W_CACHE; ++x) {
        float16 m = (float16)(-INFINITY);
        for (int kh = 0; kh < KH; ++kh) {
            const int iy = iy0 + kh * DH;
            if (iy >= 0 && iy < H)
                m = fmax(m, vload16((size_t)iy * W + x, X));
        }
        column[x] = m;
    }
    for (int ox = 0; ox < Wo; ++ox) {
        const int ix0 = ox * SW - pad_l;
        float16 m = (float16)(-INFINITY);
#pragma unroll
        for (int kw = 0; kw < KW; ++kw) {
            const int ix = ix0 + kw * DW;
            if (ix >= 0 && ix < W)
                m = fmax(m, column[ix]);
        }
        vstore16(m, ox, Y);
    }
#else
    for (int ox = 0; ox < Wo; ++ox) {
        const int ix0 = ox * SW - pad_l;
        float16 m = (float16)(-INFINITY);
        for (int kh = 0; kh < KH; ++kh) {
            const int iy = iy0 + kh * DH;
            if (iy < 0 || iy >= H)
                continue;
#pragma unroll
            for (int kw = 0; kw < KW; ++kw) {
                const int ix = ix0 + kw * DW;
                if (ix >= 0 && ix < W)
                    m = fmax(m, vload16((size_t)iy * W + ix, X));
            }
        }
        vstore16(m, ox, Y);
    }
#endif
}
#endif

// Average or maximum of every channel over whole planes of blocked X, written to plain Y [N][C] (a 1x1 plane).
// Work: dim 0 = channel blocks, dim 1 = batch.
__kernel void global_pool16(__global const float *restrict X, __global float *restrict Y, int P, int C, int CB,
                            int N, int is_max)
{
    const int cb = get_global_id(0);
    const int n = get_global_id(1);
    if (cb >= CB || n >= N)
        return;
    X += ((size_t)n * CB + cb) * P * 16;
    float16 acc = is_max ? (float16)(-INFINITY) : (float16)(0.0f);
    for (int p = 0; p < P; ++p)
        acc = is_max ? fmax(acc, vload16(p, X)) : acc + vload16(p, X);
    if (!is_max)
        acc /= (float)P;
    STORE_PLAIN_LANES(acc, Y + (size_t)n * C + cb * 16, 1, min(16, C - cb * 16))
}

// Nearest-neighbour Resize on blocked X: output pixel (oy, ox) copies input pixel (rows[oy], cols[ox]), the
// source indices computed on the host for the node's coordinate mode. Work: (Wo, Ho, batch * channel blocks).
__kernel void resize_nearest16(__global const float *restrict X, __global float *restrict Y,
                               __global const int *restrict rows, __global const int *restrict cols, int H, int W,
                               int Ho, int Wo, int NCB)
{
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    const int ncb = get_global_id(2);
    if (ox >= Wo || oy >= Ho || ncb >= NCB)
        return;
    const float16 v = vload16(((size_t)ncb * H + rows[oy]) * W + cols[ox], X);
    vstore16(v, ((size_t)ncb * Ho + oy) * Wo + ox, Y);
}
