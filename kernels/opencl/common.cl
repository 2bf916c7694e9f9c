// Shared by every edgeinfer OpenCL template: vector-type helpers and the fused activations.
// The host prepends this file to each template; knobs arrive as -D build options.

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

// The multiply-accumulate of every conv and GEMM inner loop. OpenCL's fma() must round once, so on a CPU without an
// FMA instruction (SSE-only x86 such as Atom/Celeron edge boxes, Sandy/Ivy Bridge AVX) PoCL emulates it in software:
// 2.5-4.5x slower than a multiply and an add (measured on PoCL 3.1, benchmarks/RESULTS.md 1m). The host defines
// HAS_FMA=0 for those ISA classes (runtime.build_flags); everywhere else fma() is one instruction.
#if defined(HAS_FMA) && !HAS_FMA
#define MAC(a, b, c) ((a) * (b) + (c))
#else
#define MAC(a, b, c) fma((a), (b), (c))
#endif

// Tensor storage: every tensor a kernel reads or writes as data (activations, weights, biases) is a `data_t` array.
// In fp32 that is float; in an fp16 pack on a GPU (DATA_HALF) it is half, and only the storage is: LD and LOADN
// widen to float as they load, ST and STOREN round to the nearest half as they store, and all arithmetic and
// accumulation stays in float. vload_half / vstore_half are core OpenCL C, so no device needs cl_khr_fp16. The host
// converts a float constant to half for a data_t parameter only (planning/templates.py data_parameters), so
// parameters that are not data (resize weights, activation parameters) stay float.
// Vectors of halves move lane by lane (scalar vload_half / vstore_half_rte): PoCL 3.1 on AVX-512 crashed (SIGSEGV)
// running kernels with vstore_halfN in a loop (upsample_nearest_w2, any N, with or without _rte), and a GPU
// coalesces the lanes across work-items anyway.
#ifdef DATA_HALF
#define data_t half
#define LD(p, i) vload_half((i), (p))
#define ST(p, i, v) vstore_half_rte((v), (i), (p))
#define HALF_LANES(N)                                                                         \
    inline CAT(float, N) CAT(load_half_lanes, N)(size_t i, __global const half *p)             \
    {                                                                                         \
        float lanes_[N];                                                                      \
        p += i * N;                                                                           \
        for (int k_ = 0; k_ < N; ++k_)                                                        \
            lanes_[k_] = vload_half(k_, p);                                                   \
        return CAT(vload, N)(0, lanes_);                                                      \
    }                                                                                         \
    inline void CAT(store_half_lanes, N)(CAT(float, N) v, size_t i, __global half *p)         \
    {                                                                                         \
        float lanes_[N];                                                                      \
        CAT(vstore, N)(v, 0, lanes_);                                                         \
        p += i * N;                                                                           \
        for (int k_ = 0; k_ < N; ++k_)                                                        \
            vstore_half_rte(lanes_[k_], k_, p);                                               \
    }
HALF_LANES(2)
HALF_LANES(4)
HALF_LANES(8)
HALF_LANES(16)
#define LOADN(N, i, p) CAT(load_half_lanes, N)((i), (p))
#define STOREN(N, v, i, p) CAT(store_half_lanes, N)((v), (i), (p))
#else
#define data_t float
#define LD(p, i) ((p)[i])
#define ST(p, i, v) ((p)[i] = (v))
#define LOADN(N, i, p) CAT(vload, N)((i), (p))
#define STOREN(N, v, i, p) CAT(vstore, N)((v), (i), (p))
#endif

// Activation codes (edgeinfer/activations.py TABLE, checked by tests/test_activations_table.py); p0, p1 are
// activation_params.
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2
#define ACT_CLIP 3
#define ACT_SIGMOID 4
#define ACT_HARD_SIGMOID 5
#define ACT_HARD_SWISH 6
#define ACT_SILU 7
#define ACT_TANH 8
#define ACT_EXP 9
#define ACT_NEG 10
#define ACT_SQRT 11
#define ACT_ABS 12
#define ACT_RECIPROCAL 13
#define ACT_FLOOR 14
#define ACT_CEIL 15
#define ACT_ELU 16
#define ACT_SOFTPLUS 17
#define ACT_LOG 18

// The fused epilogue on v (type T): act(v + Z) (has_z 1), act(v) + Z (has_z 2: a residual Add after the
// activation, executor.py) or act(v); z is the expression that loads Z, evaluated only where it is used.
#define FUSED_EPILOGUE(T, v, z, has_z, act, p0, p1) \
    {                                               \
        if ((has_z) == 1)                           \
            v += (z);                               \
        APPLY_ACTIVATION(T, v, act, p0, p1);        \
        if ((has_z) == 2)                           \
            v += (z);                               \
    }

// The inner loop of the local-memory GEMM tiles (gemm.cl gemm_local, conv_gemm.cl conv_gemm): over one BK-deep slice
// of the tiles As[BK][WM * TM] and Bs[BK][WN * TN], the work-item (tx, ty) accumulates its TM x TN outputs acc, rows
// ty + i * WM and columns tx + j * WN (strided by the work-group's shape: no local-memory bank conflicts).
#define LOCAL_TILE_FMA(As, Bs, acc)                                  \
    _Pragma("unroll") for (int kk_ = 0; kk_ < BK; ++kk_)             \
    {                                                                \
        float a_[TM], b_[TN];                                        \
        for (int i_ = 0; i_ < TM; ++i_)                              \
            a_[i_] = As[kk_][ty + i_ * WM];                          \
        for (int j_ = 0; j_ < TN; ++j_)                              \
            b_[j_] = Bs[kk_][tx + j_ * WN];                          \
        for (int i_ = 0; i_ < TM; ++i_)                              \
            for (int j_ = 0; j_ < TN; ++j_)                          \
                acc[i_][j_] = MAC(a_[i_], b_[j_], acc[i_][j_]);      \
    }

// Stores v (a vector of type T with WIDTH lanes) at Y + at after the fused epilogue: whole when valid == WIDTH,
// else its first `valid` lanes one by one (a partial last block). Z is read at the same place.
#define STORE_EPILOGUE(T, WIDTH, v, Y, Z, at, valid, has_z, act, p0, p1)                   \
    {                                                                                      \
        if ((valid) == (WIDTH)) {                                                          \
            FUSED_EPILOGUE(T, v, LOADN(WIDTH, 0, (Z) + (at)), has_z, act, p0, p1)          \
            STOREN(WIDTH, v, 0, (Y) + (at));                                               \
        } else {                                                                           \
            float lanes_[WIDTH];                                                           \
            CAT(vstore, WIDTH)(v, 0, lanes_);                                              \
            for (int j_ = 0; j_ < (valid); ++j_) {                                         \
                float s_ = lanes_[j_];                                                     \
                FUSED_EPILOGUE(float, s_, LD(Z, (at) + j_), has_z, act, p0, p1)            \
                ST(Y, (at) + j_, s_);                                                      \
            }                                                                              \
        }                                                                                  \
    }

// Applies activation `act` to `v` (scalar or vector of type T) in place. A runtime switch, not a build
// option, so that one program serves every activation: the branch is taken once per output vector.
#define APPLY_ACTIVATION(T, v, act, p0, p1)                                                   \
    switch (act) {                                                                            \
    case ACT_RELU: v = fmax(v, (T)(0.0f)); break;                                             \
    case ACT_LEAKY_RELU: v = fmax(v, (T)(0.0f)) + (T)(p0) * fmin(v, (T)(0.0f)); break;        \
    case ACT_CLIP: v = fmin(fmax(v, (T)(p0)), (T)(p1)); break;                                \
    case ACT_SIGMOID: v = (T)(1.0f) / ((T)(1.0f) + exp(-v)); break;                           \
    case ACT_HARD_SIGMOID: v = fmin(fmax((T)(p0) * v + (T)(p1), (T)(0.0f)), (T)(1.0f)); break; \
    case ACT_HARD_SWISH: v = v * fmin(fmax(v / (T)(6.0f) + (T)(0.5f), (T)(0.0f)), (T)(1.0f)); break; \
    case ACT_SILU: v = v / ((T)(1.0f) + exp(-v)); break;                                      \
    case ACT_TANH: v = tanh(v); break;                                                        \
    case ACT_EXP: v = exp(v); break;                                                          \
    case ACT_NEG: v = -v; break;                                                              \
    case ACT_SQRT: v = sqrt(v); break;                                                        \
    case ACT_ABS: v = fabs(v); break;                                                         \
    case ACT_RECIPROCAL: v = (T)(1.0f) / v; break;                                            \
    case ACT_FLOOR: v = floor(v); break;                                                      \
    case ACT_CEIL: v = ceil(v); break;                                                        \
    case ACT_ELU: v = fmax(v, (T)(0.0f)) + (T)(p0) * (exp(fmin(v, (T)(0.0f))) - (T)(1.0f)); break; \
    case ACT_SOFTPLUS: v = log((T)(1.0f) + exp(v)); break;                                    \
    case ACT_LOG: v = log(v); break;                                                          \
    default: break;                                                                           \
    }

// Tensors of up to MAX_RANK dimensions are described by a small __constant int array (see tensor.cl).
#define MAX_RANK 6

// Register-tile helper for templates with TM rows (gemm, conv2d): acc[i] += p[i] * x for the TM row
// weights at p, loaded with ONE vector load and broadcast lane by lane. TM scalar loads of the same weights
// instead made the GEMM 1.7x slower on PoCL (150 vs 260 GFLOP/s at 16x16 tiles).
#ifdef TM
#if TM == 1
#define FMA_ROWS(acc, p, x) acc[0] = MAC((VEC)(LD(p, 0)), x, acc[0]);
#else
#if TM == 2
#define FMA_ROWS(acc, p, x) \
    { const CAT(float, TM) tile_w = LOADN(TM, 0, p); \
    acc[0] = MAC((VEC)(tile_w.s0), x, acc[0]); \
    acc[1] = MAC((VEC)(tile_w.s1), x, acc[1]); }
#elif TM == 4
#define FMA_ROWS(acc, p, x) \
    { const CAT(float, TM) tile_w = LOADN(TM, 0, p); \
    acc[0] = MAC((VEC)(tile_w.s0), x, acc[0]); \
    acc[1] = MAC((VEC)(tile_w.s1), x, acc[1]); \
    acc[2] = MAC((VEC)(tile_w.s2), x, acc[2]); \
    acc[3] = MAC((VEC)(tile_w.s3), x, acc[3]); }
#elif TM == 8
#define FMA_ROWS(acc, p, x) \
    { const CAT(float, TM) tile_w = LOADN(TM, 0, p); \
    acc[0] = MAC((VEC)(tile_w.s0), x, acc[0]); \
    acc[1] = MAC((VEC)(tile_w.s1), x, acc[1]); \
    acc[2] = MAC((VEC)(tile_w.s2), x, acc[2]); \
    acc[3] = MAC((VEC)(tile_w.s3), x, acc[3]); \
    acc[4] = MAC((VEC)(tile_w.s4), x, acc[4]); \
    acc[5] = MAC((VEC)(tile_w.s5), x, acc[5]); \
    acc[6] = MAC((VEC)(tile_w.s6), x, acc[6]); \
    acc[7] = MAC((VEC)(tile_w.s7), x, acc[7]); }
#elif TM == 16
#define FMA_ROWS(acc, p, x) \
    { const CAT(float, TM) tile_w = LOADN(TM, 0, p); \
    acc[0] = MAC((VEC)(tile_w.s0), x, acc[0]); \
    acc[1] = MAC((VEC)(tile_w.s1), x, acc[1]); \
    acc[2] = MAC((VEC)(tile_w.s2), x, acc[2]); \
    acc[3] = MAC((VEC)(tile_w.s3), x, acc[3]); \
    acc[4] = MAC((VEC)(tile_w.s4), x, acc[4]); \
    acc[5] = MAC((VEC)(tile_w.s5), x, acc[5]); \
    acc[6] = MAC((VEC)(tile_w.s6), x, acc[6]); \
    acc[7] = MAC((VEC)(tile_w.s7), x, acc[7]); \
    acc[8] = MAC((VEC)(tile_w.s8), x, acc[8]); \
    acc[9] = MAC((VEC)(tile_w.s9), x, acc[9]); \
    acc[10] = MAC((VEC)(tile_w.sa), x, acc[10]); \
    acc[11] = MAC((VEC)(tile_w.sb), x, acc[11]); \
    acc[12] = MAC((VEC)(tile_w.sc), x, acc[12]); \
    acc[13] = MAC((VEC)(tile_w.sd), x, acc[13]); \
    acc[14] = MAC((VEC)(tile_w.se), x, acc[14]); \
    acc[15] = MAC((VEC)(tile_w.sf), x, acc[15]); }
#endif
#endif
#endif
