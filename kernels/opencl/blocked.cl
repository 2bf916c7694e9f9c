// Convolutions on the channel-blocked layout NCHWxc: a tensor [N][C][H][W] is stored as
// [N][ceil(C/BLOCK)][H][W][BLOCK], the BLOCK channels of one block and one pixel being one floatB vector (lanes
// past C hold finite values that no kernel reads back into a real channel). BLOCK (a -D define: 4, 8 or 16) is the
// CPU's vector width, chosen per device by layout.py: 16 on AVX-512, 8 on AVX2, 4 on SSE/NEON. On CPUs (PoCL)
// this turns depthwise taps into aligned vector loads without masks and lets a 1x1 or kxk conv broadcast one
// input value against a vector of BLOCK output channels' weights: ~2.5x faster depthwise layers and 400+ GFLOP/s
// GEMMs on the development VM at BLOCK 16 (docs/notes-opencl.md, session 3). The layout pass
// (edgeinfer/backends/opencl/layout.py) decides which tensors are blocked and inserts the conversions.
//
// Every conv kernel: Y = act(conv(X) + bias + Z) (FUSED_EPILOGUE), Y and Z blocked. Weights are packed by
// kernels_blocked.py with BLOCK output channels innermost and zero rows for the padded output channels.
// Knobs: TP pixels x NB output-channel blocks per work-item (conv_pw_blocked, conv_direct_blocked); TW pixels x TY
// rows (conv_dw_blocked). IN_BLOCKED: X blocked (1) or plain NCHW (0, e.g. a 3-channel image into the stem).

#if BLOCK != 4 && BLOCK != 8 && BLOCK != 16
#error "BLOCK must be 4, 8 or 16"
#endif
// One block of one pixel: a vector of BLOCK floats, its loads and stores.
#define floatB CAT(float, BLOCK)
#define vloadB CAT(vload, BLOCK)
#define vstoreB CAT(vstore, BLOCK)

// ACT (ACT_D: the depthwise part of conv_sep_blocked), when the planner defines it, is the activation code of the conv:
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

// HAS_Z, likewise, is the residual mode of the epilogue (rewrites.py keeps it equal to the has_z argument): the
// unrolled stores then compile without the other modes' branches. With them PoCL compiled conv_pw_blocked 2-3x slower
// (TP 6 NB 4: 0.8 s against 0.25-0.4 s; most of a cold load is such compiles, docs/program-cache.md).
#ifdef HAS_Z
#define HAS_Z_OF(has_z) HAS_Z
#else
#define HAS_Z_OF(has_z) (has_z)
#endif

#define BLOCKED_STORE(v, Y, Z, at, has_z, act, p0, p1)                                       \
    {                                                                                         \
        floatB s_ = (v);                                                                     \
        FUSED_EPILOGUE(floatB, s_, vloadB((at), (Z)), HAS_Z_OF(has_z), ACT_OF(act), p0, p1) \
        vstoreB(s_, (at), (Y));                                                              \
    }

#ifdef TP
#if IN_BLOCKED
#define X_PLANE_FLOATS(C, P) ((size_t)(((C) + BLOCK - 1) / BLOCK) * (P) * BLOCK)
#define XS BLOCK  // distance between neighbouring pixels of one channel
#else
#define X_PLANE_FLOATS(C, P) ((size_t)(C) * (P))
#define XS 1
#endif

// The NB x TP accumulators' k-loop of a 1x1 conv: channel k of pixels p0.., times BLOCK output channels each.
// COND(t) says whether pixel t is inside the tensor (constant-true on whole blocks, so it unrolls away).
#define POINTWISE_K_LOOP(COND)                                                              \
    for (int k = 0; k < C; ++k) {                                                           \
        __global const float *xs = X + X_AT(k, p0);                                         \
        floatB wv[NB];                                                                     \
        _Pragma("unroll") for (int j = 0; j < NB; ++j) wv[j] = vloadB((cb0 + j) * C + k, Wt); \
        _Pragma("unroll") for (int t = 0; t < TP; ++t) {                                    \
            if (COND(t)) {                                                                  \
                const floatB xb = (floatB)(xs[t * XS]);                                   \
                _Pragma("unroll") for (int j = 0; j < NB; ++j) acc[j][t] = MAC(xb, wv[j], acc[j][t]); \
            }                                                                               \
        }                                                                                   \
    }
#if IN_BLOCKED
#define X_AT(k, p) (((size_t)((k) / BLOCK) * P + (p)) * BLOCK + (k) % BLOCK)
#else
#define X_AT(k, p) ((size_t)(k) * P + (p))
#endif
// Declares the NB x TP accumulators acc of output blocks cb0.., each starting at its block's bias.
#define BIAS_TILE(acc)                                                                       \
    floatB acc[NB][TP];                                                                     \
    _Pragma("unroll") for (int j_ = 0; j_ < NB; ++j_) {                                      \
        const floatB b_ = vloadB(cb0 + j_, bias);                                          \
        _Pragma("unroll") for (int t_ = 0; t_ < TP; ++t_) acc[j_][t_] = b_;                  \
    }
#define ALWAYS(t) 1
#define INSIDE(t) ((t) < np)

// The kernels that walk one output row in chunks of TP pixels for NB output blocks (conv_direct_blocked, conv_sep_blocked).
// Work: dim 0 = output rows, dim 1 = groups of NB output blocks, dim 2 = batch; X advances X_FLOATS per image.
#define ROW_WALK_BEGIN(X_FLOATS)                                 \
    const int oy = get_global_id(0);                             \
    const int cb0 = get_global_id(1) * NB;                       \
    const int n = get_global_id(2);                              \
    if (oy >= Ho || cb0 >= CBO)                                  \
        return;                                                  \
    X += n * (X_FLOATS);                                         \
    Y += (size_t)n * CBO * Ho * Wo * BLOCK;                         \
    Z += (size_t)n * CBO * Ho * Wo * BLOCK;
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
__kernel void conv_pw_blocked(__global const float *restrict X, __global const float *restrict Wt,
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
    Y += (size_t)n * CBO * P * BLOCK;
    Z += (size_t)n * CBO * P * BLOCK;
    BIAS_TILE(acc)
    const int np = min(TP, P - p0);
    if (np == TP) {
        POINTWISE_K_LOOP(ALWAYS)
    } else {
        POINTWISE_K_LOOP(INSIDE)
    }
    // Unrolled with guards, not loops to np: indexing acc with a loop bound known only at run time cost
    // conv_direct_blocked ~4% of SqueezeNet (its stores were such loops until session 4).
#pragma unroll
    for (int j = 0; j < NB; ++j)
#pragma unroll
        for (int t = 0; t < TP; ++t)
            if (cb0 + j < CBO && t < np)
                BLOCKED_STORE(acc[j][t], Y, Z, (size_t)(cb0 + j) * P + p0 + t, has_z, act, p0_, p1_)
}

// Direct KHxKW convolution (group 1), any stride, padding and dilation. A work-item walks one output row in
// chunks of TP pixels for NB output-channel blocks; chunks whose taps all fall inside the row skip the column
// checks. Weights: [CBO][KH][C][KW][BLOCK]. Work: dim 0 = output rows, dim 1 = block groups of NB, dim 2 = batch.
__kernel void conv_direct_blocked(__global const float *restrict X, __global const float *restrict Wt,
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
                __global const float *wk = Wt + ((((size_t)cb0 * KH + kh) * C + ci) * KW) * BLOCK;
#pragma unroll
                for (int kw = 0; kw < KW; ++kw) {
                    floatB wv[NB];
#pragma unroll
                    for (int j = 0; j < NB; ++j)
                        wv[j] = vloadB((size_t)j * KH * C * KW + kw, wk);
                    if (interior) {
#pragma unroll
                        for (int t = 0; t < TP; ++t) {
                            const floatB xb = (floatB)(row[(ix0 + t * SW + kw * DW) * XS]);
#pragma unroll
                            for (int j = 0; j < NB; ++j)
                                acc[j][t] = MAC(xb, wv[j], acc[j][t]);
                        }
                    } else {
#pragma unroll
                        for (int t = 0; t < TP; ++t) {
                            const int ix = ix0 + t * SW + kw * DW;
                            if (t < np && ix >= 0 && ix < W) {
                                const floatB xb = (floatB)(row[ix * XS]);
#pragma unroll
                                for (int j = 0; j < NB; ++j)
                                    acc[j][t] = MAC(xb, wv[j], acc[j][t]);
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
// Weights: [CB][KH*KW][BLOCK]. Work: dim 0 = row blocks of TY, dim 1 = channel blocks, dim 2 = batch.
__kernel void conv_dw_blocked(__global const float *restrict X, __global const float *restrict Wt,
                        __global const float *restrict bias, __global const float *restrict Z,
                        __global float *restrict Y, int CB, int H, int W, int Ho, int Wo, int pad_t, int pad_l,
                        int has_z, int act, float p0_, float p1_)
{
    const int oy0 = get_global_id(0) * TY;
    const int cb = get_global_id(1);
    const int n = get_global_id(2);
    if (oy0 >= Ho || cb >= CB)
        return;
    floatB w[KH * KW];
#pragma unroll
    for (int k = 0; k < KH * KW; ++k)
        w[k] = vloadB(cb * KH * KW + k, Wt);
    const floatB b = vloadB(cb, bias);
    X += ((size_t)n * CB + cb) * H * W * BLOCK;
    const size_t out_plane = ((size_t)n * CB + cb) * Ho * Wo;
    for (int ox0 = 0; ox0 < Wo; ox0 += TW) {
        const int np = min(TW, Wo - ox0);
        const int ix0 = ox0 * SW - pad_l;
        const bool interior = np == TW && ix0 >= 0 && ix0 + (TW - 1) * SW + (KW - 1) * DW < W;
        // The TY rows share only the weights: one row after the other, unrolled up to 2 rows. PoCL compiled 4 rows
        // unrolled for 7 s at TW 4 (YOLOX-nano's stride-2 layer; 0.84 s as a loop); 2 rows unrolled ran faster.
#if TY > 2
#pragma nounroll
#else
#pragma unroll
#endif
        for (int u = 0; u < TY; ++u) {
            if (oy0 + u >= Ho)
                break;
            floatB acc[TW];
#pragma unroll
            for (int t = 0; t < TW; ++t)
                acc[t] = b;
#pragma unroll
            for (int kh = 0; kh < KH; ++kh) {
                const int iy = (oy0 + u) * SH - pad_t + kh * DH;
                if (iy < 0 || iy >= H)
                    continue;
                __global const float *row = X + (size_t)iy * W * BLOCK;
                if (interior && DW == 1) {
#pragma unroll
                    for (int i = 0; i < (TW - 1) * SW + KW; ++i) {
                        const floatB x = vloadB(ix0 + i, row);
#pragma unroll
                        for (int t = 0; t < TW; ++t) {
                            const int kw = i - t * SW;
                            if (kw >= 0 && kw < KW)
                                acc[t] = MAC(w[kh * KW + kw], x, acc[t]);
                        }
                    }
                } else {
#pragma unroll
                    for (int t = 0; t < TW; ++t)
#pragma unroll
                        for (int kw = 0; kw < KW; ++kw) {
                            const int ix = ix0 + t * SW + kw * DW;
                            if (t < np && ix >= 0 && ix < W)
                                acc[t] = MAC(w[kh * KW + kw], vloadB(ix, row), acc[t]);
                        }
                }
            }
#pragma unroll
            for (int t = 0; t < TW; ++t)
                if (t < np)
                    BLOCKED_STORE(acc[t], Y, Z, out_plane + (size_t)(oy0 + u) * Wo + ox0 + t, has_z, act, p0_, p1_)
        }
    }
}
#endif

#ifdef SEP
// A depthwise-separable pair in one pass: Y = act(pointwise(act_d(depthwise(X) + bias_d)) + bias + Z). The
// depthwise output never reaches memory: a work-item computes it for TP pixels of one output row, one channel
// block at a time, and feeds its BLOCK lanes straight into the NB x TP pointwise accumulators (as conv_pw_blocked does
// with its input). Groups of NB output blocks each recompute the depthwise part, so layout.py fuses only pairs
// with few output blocks. Padded depthwise channels come out finite (zero weights and bias) and meet zero rows
// of Wp. Wd: [CB][KH*KW][BLOCK]; Wp: [CBO'][CB*BLOCK][BLOCK]. Work: dim 0 = output rows, dim 1 = groups of NB output
// blocks, dim 2 = batch.
__kernel void conv_sep_blocked(__global const float *restrict X, __global const float *restrict Wd,
                         __global const float *restrict bias_d, __global const float *restrict Wp,
                         __global const float *restrict bias, __global const float *restrict Z,
                         __global float *restrict Y, int CB, int H, int W, int Ho, int Wo, int CBO, int pad_t,
                         int pad_l, int act_d, float d0_, float d1_, int has_z, int act, float p0_, float p1_)
{
    ROW_WALK_BEGIN((size_t)CB * H * W * BLOCK)
    const int K = CB * BLOCK;  // pointwise input channels, padding included
    for (int ox0 = 0; ox0 < Wo; ox0 += TP) {
        ROW_CHUNK_BEGIN(ox0)
        for (int cb = 0; cb < CB; ++cb) {
            floatB d[TP];
            const floatB bd = vloadB(cb, bias_d);
#pragma unroll
            for (int t = 0; t < TP; ++t)
                d[t] = bd;
            __global const float *plane = X + (size_t)cb * H * W * BLOCK;
            for (int kh = 0; kh < KH; ++kh) {
                const int iy = oy * SH - pad_t + kh * DH;
                if (iy < 0 || iy >= H)
                    continue;
                __global const float *row = plane + (size_t)iy * W * BLOCK;
                floatB wv[KW];
#pragma unroll
                for (int kw = 0; kw < KW; ++kw)
                    wv[kw] = vloadB((cb * KH + kh) * KW + kw, Wd);
                if (interior && DW == 1) {  // each input pixel of the row loaded once
#pragma unroll
                    for (int i = 0; i < (TP - 1) * SW + KW; ++i) {
                        const floatB xv = vloadB(ix0 + i, row);
#pragma unroll
                        for (int t = 0; t < TP; ++t) {
                            const int kw = i - t * SW;
                            if (kw >= 0 && kw < KW)
                                d[t] = MAC(wv[kw], xv, d[t]);
                        }
                    }
                } else {
#pragma unroll
                    for (int kw = 0; kw < KW; ++kw)
#pragma unroll
                        for (int t = 0; t < TP; ++t) {
                            const int ix = ix0 + t * SW + kw * DW;
                            if (t < np && ix >= 0 && ix < W)
                                d[t] = MAC(wv[kw], vloadB(ix, row), d[t]);
                        }
                }
            }
            float lanes[TP][BLOCK];
#pragma unroll
            for (int t = 0; t < TP; ++t) {
                APPLY_ACTIVATION(floatB, d[t], ACT_D_OF(act_d), d0_, d1_);
                vstoreB(d[t], 0, lanes[t]);
            }
            // A loop, not unrolled: BLOCK copies of the NB x TP FMAs made PoCL compile each conv_sep_blocked program
            // for 1.7-2.5 s (1.0-1.3 s as a loop) for no measured speed (lanes[t][l] is a broadcast load either way).
#pragma nounroll
            for (int l = 0; l < BLOCK; ++l) {
                floatB wv[NB];
#pragma unroll
                for (int j = 0; j < NB; ++j)
                    wv[j] = vloadB((size_t)(cb0 + j) * K + cb * BLOCK + l, Wp);
#pragma unroll
                for (int t = 0; t < TP; ++t) {
                    const floatB xb = (floatB)(lanes[t][l]);
#pragma unroll
                    for (int j = 0; j < NB; ++j)
                        acc[j][t] = MAC(xb, wv[j], acc[j][t]);
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
        float lanes_[BLOCK];                               \
        vstoreB((v), 0, lanes_);                       \
        for (int l_ = 0; l_ < (valid); ++l_)            \
            (y)[(size_t)l_ * (stride)] = lanes_[l_];    \
    }

// Layout conversions at the edges of a blocked region. Work: dim 0 = pixels, dim 1 = channel blocks,
// dim 2 = batch. Lanes past C are written as zeros.
#define CONVERSION_BEGIN                  \
    const int p = get_global_id(0);       \
    const int cb = get_global_id(1);      \
    const int n = get_global_id(2);       \
    const int CB = (C + BLOCK - 1) / BLOCK;       \
    if (p >= P || cb >= CB)               \
        return;

__kernel void to_blocked(__global const float *restrict X, __global float *restrict Y, int C, int P)
{
    CONVERSION_BEGIN
    float lanes[BLOCK];
    __global const float *x = X + ((size_t)n * C + cb * BLOCK) * P + p;
#pragma unroll
    for (int c = 0; c < BLOCK; ++c)
        lanes[c] = cb * BLOCK + c < C ? x[(size_t)c * P] : 0.0f;
    vstoreB(vloadB(0, lanes), ((size_t)n * CB + cb) * P + p, Y);
}

__kernel void from_blocked(__global const float *restrict X, __global float *restrict Y, int C, int P)
{
    CONVERSION_BEGIN
    STORE_PLAIN_LANES(vloadB(((size_t)n * CB + cb) * P + p, X), Y + ((size_t)n * C + cb * BLOCK) * P + p, P,
                      min(BLOCK, C - cb * BLOCK))
}

// MaxPool on blocked X (padding taps skipped, as the max ignores them). A work-item walks one output row of one
// channel block. Work: dim 0 = output rows, dim 1 = batch * channel blocks.
#ifdef POOL
__kernel void maxpool_blocked(__global const float *restrict X, __global float *restrict Y, int H, int W, int Ho, int Wo,
                        int pad_t, int pad_l, int NCB)
{
    const int oy = get_global_id(0);
    const int ncb = get_global_id(1);
    if (oy >= Ho || ncb >= NCB)
        return;
    X += (size_t)ncb * H * W * BLOCK;
    Y += ((size_t)ncb * Ho + oy) * Wo * BLOCK;
    const int iy0 = oy * SH - pad_t;
#ifdef W_CACHE
    // W_CACHE == W: the maxima over the window's rows of every input column first, then the maxima of KW of those
    // per output pixel: KH*W + KW*Wo loads instead of KH*KW*Wo (YOLOX's 13x13 SPP pools: 6.5x fewer).
    floatB column[W_CACHE];
    for (int x = 0; x < W_CACHE; ++x) {
        floatB m = (floatB)(-INFINITY);
        for (int kh = 0; kh < KH; ++kh) {
            const int iy = iy0 + kh * DH;
            if (iy >= 0 && iy < H)
                m = fmax(m, vloadB((size_t)iy * W + x, X));
        }
        column[x] = m;
    }
    for (int ox = 0; ox < Wo; ++ox) {
        const int ix0 = ox * SW - pad_l;
        floatB m = (floatB)(-INFINITY);
#pragma unroll
        for (int kw = 0; kw < KW; ++kw) {
            const int ix = ix0 + kw * DW;
            if (ix >= 0 && ix < W)
                m = fmax(m, column[ix]);
        }
        vstoreB(m, ox, Y);
    }
#else
    for (int ox = 0; ox < Wo; ++ox) {
        const int ix0 = ox * SW - pad_l;
        floatB m = (floatB)(-INFINITY);
        for (int kh = 0; kh < KH; ++kh) {
            const int iy = iy0 + kh * DH;
            if (iy < 0 || iy >= H)
                continue;
#pragma unroll
            for (int kw = 0; kw < KW; ++kw) {
                const int ix = ix0 + kw * DW;
                if (ix >= 0 && ix < W)
                    m = fmax(m, vloadB((size_t)iy * W + ix, X));
            }
        }
        vstoreB(m, ox, Y);
    }
#endif
}
#endif

// Average or maximum of every channel over whole planes of blocked X, written to plain Y [N][C] (a 1x1 plane).
// Work: dim 0 = channel blocks, dim 1 = batch.
__kernel void global_pool_blocked(__global const float *restrict X, __global float *restrict Y, int P, int C, int CB,
                            int N, int is_max)
{
    const int cb = get_global_id(0);
    const int n = get_global_id(1);
    if (cb >= CB || n >= N)
        return;
    X += ((size_t)n * CB + cb) * P * BLOCK;
    floatB acc = is_max ? (floatB)(-INFINITY) : (floatB)(0.0f);
    for (int p = 0; p < P; ++p)
        acc = is_max ? fmax(acc, vloadB(p, X)) : acc + vloadB(p, X);
    if (!is_max)
        acc /= (float)P;
    STORE_PLAIN_LANES(acc, Y + (size_t)n * C + cb * BLOCK, 1, min(BLOCK, C - cb * BLOCK))
}

// Nearest-neighbour Resize on blocked X: output pixel (oy, ox) copies input pixel (rows[oy], cols[ox]), the
// source indices computed on the host for the node's coordinate mode. Work: (Wo, Ho, batch * channel blocks).
__kernel void resize_nearest_blocked(__global const float *restrict X, __global float *restrict Y,
                               __global const int *restrict rows, __global const int *restrict cols, int H, int W,
                               int Ho, int Wo, int NCB)
{
    const int ox = get_global_id(0);
    const int oy = get_global_id(1);
    const int ncb = get_global_id(2);
    if (ox >= Wo || oy >= Ho || ncb >= NCB)
        return;
    const floatB v = vloadB(((size_t)ncb * H + rows[oy]) * W + cols[ox], X);
    vstoreB(v, ((size_t)ncb * Ho + oy) * Wo + ox, Y);
}
