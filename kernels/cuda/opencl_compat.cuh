// OpenCL C, as the templates in kernels/opencl/ use it, spelled in CUDA C++: the CUDA backend compiles those very
// templates (edgeinfer/backends/cuda/sources.py puts this header first), so each CUDA kernel is its OpenCL kernel,
// line for line. Only what the templates use is here; a template that needs more fails to compile, loudly
// (tests/test_cuda_sources.py compiles every template with the knobs the GPU plans use).
//
// One thing a header cannot do: OpenCL's vector literal `(float16)(a, b)` is, in C++, a cast of the comma
// expression `(a, b)`. sources.py rewrites those literal casts into constructor calls `float16(a, b)` before
// compiling (cuda_dialect); every other OpenCL construct maps here.
//
// Everything is __host__ __device__ so that tests can check the semantics on the host (no GPU needed).

#define EI_HD __host__ __device__ __forceinline__

// ---------------------------------------------------------------- address spaces, kernels, work-items

#define __kernel extern "C" __global__
#define __global
#define __constant
// In a kernel body `__local float t[N]` is shared memory. On a pointer parameter (softmax.cl group_reduce) NVRTC
// rejects __shared__, so sources.cuda_dialect drops `__local` there: CUDA pointers are generic anyway.
#define __local __shared__
#define restrict __restrict__
// OpenCL helper functions carry no address-space qualifier; in CUDA they must be device functions. (`inline` is
// not re-expanded inside its own definition.)
#define inline __device__ inline

typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;

#define CLK_LOCAL_MEM_FENCE 1
#define CLK_GLOBAL_MEM_FENCE 2
// A work-group is a thread block: __syncthreads orders shared and global memory within it, as barrier() does.
#define barrier(flags) __syncthreads()

#ifdef __CUDA_ARCH__
// OpenCL's global size is CUDA's grid times block (the backend launches ceil(work / local) blocks of `local`).
__device__ __forceinline__ size_t get_local_id(int d) { return d == 0 ? threadIdx.x : d == 1 ? threadIdx.y : threadIdx.z; }
__device__ __forceinline__ size_t get_group_id(int d) { return d == 0 ? blockIdx.x : d == 1 ? blockIdx.y : blockIdx.z; }
__device__ __forceinline__ size_t get_local_size(int d) { return d == 0 ? blockDim.x : d == 1 ? blockDim.y : blockDim.z; }
__device__ __forceinline__ size_t get_global_id(int d)
{
    return get_group_id(d) * get_local_size(d) + get_local_id(d);
}
#endif

// NVRTC has no math.h and no __builtin_huge_valf (nvcc, which the tests here use, has both): the bit pattern.
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// ---------------------------------------------------------------- scalar built-ins CUDA lacks

EI_HD float clamp(float x, float lo, float hi) { return fminf(fmaxf(x, lo), hi); }
EI_HD int clamp(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }
template <class T> EI_HD T select(T a, T b, int c) { return c ? b : a; }

// ---------------------------------------------------------------- vector types

// std::enable_if without the standard library (NVRTC compiles without it).
template <bool B, class T = void> struct std_enable_if {};
template <class T> struct std_enable_if<true, T> { typedef T type; };

namespace ocl {

template <class T> struct same { typedef T type; };  // a scalar operand that takes the vector's lane type
template <class T, int N> struct vec;
struct no_half {};  // vectors of 2 and 3 lanes are not built from halves
template <class T, int N> struct half_of { typedef vec<T, N / 2> type; };
template <class T> struct half_of<T, 2> { typedef no_half type; };
template <class T> struct half_of<T, 3> { typedef no_half type; };

// The read-only swizzles the templates use, as union members that convert to a vector: `.even`, `.odd`, `.zyx`.
template <class T, int N> struct even_view {
    T lane[N];
    EI_HD operator vec<T, N / 2>() const;
};
template <class T, int N> struct odd_view {
    T lane[N];
    EI_HD operator vec<T, N / 2>() const;
};
template <class T> struct zyx_view {
    T lane[3];
    EI_HD operator vec<T, 3>() const;
};

// Lane storage with OpenCL's names: .s0 ... .sf, .x .y .z .w (up to 4 lanes).
#define EI_VIEWS(N) even_view<T, N> even; odd_view<T, N> odd;
template <class T, int N> struct lanes;
template <class T> struct lanes<T, 2> {
    union { T lane[2]; struct { T x, y; }; struct { T s0, s1; }; };
};
template <class T> struct lanes<T, 3> {
    union { T lane[3]; struct { T x, y, z; }; struct { T s0, s1, s2; }; zyx_view<T> zyx; };
};
template <class T> struct lanes<T, 4> {
    union { T lane[4]; struct { T x, y, z, w; }; struct { T s0, s1, s2, s3; }; EI_VIEWS(4) };
};
template <class T> struct lanes<T, 8> {
    union { T lane[8]; struct { T s0, s1, s2, s3, s4, s5, s6, s7; }; EI_VIEWS(8) };
};
template <class T> struct lanes<T, 16> {
    union {
        T lane[16];
        struct { T s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, sa, sb, sc, sd, se, sf; };
        EI_VIEWS(16)
    };
};
#undef EI_VIEWS

template <class T, int N> struct vec : lanes<T, N> {
    vec() = default;
    // (float4)(x): every lane x.
    EI_HD vec(T s)
    {
#pragma unroll
        for (int i = 0; i < N; ++i)
            this->lane[i] = s;
    }
    // float4(a, b, c, d): one value per lane (sources.py turns OpenCL's literal casts into these calls).
    template <class A0, class A1, class... Rest, class = typename std_enable_if<2 + sizeof...(Rest) == N>::type>
    EI_HD vec(A0 a0, A1 a1, Rest... rest)
    {
        const T values[N] = {T(a0), T(a1), T(rest)...};
#pragma unroll
        for (int i = 0; i < N; ++i)
            this->lane[i] = values[i];
    }
    // float16(lo, hi): two halves (also from .even / .odd views, which convert to halves).
    EI_HD vec(typename half_of<T, N>::type lo, typename half_of<T, N>::type hi)
    {
#pragma unroll
        for (int i = 0; i < N / 2; ++i) {
            this->lane[i] = lo.lane[i];
            this->lane[N / 2 + i] = hi.lane[i];
        }
    }
    EI_HD T &operator[](int i) { return this->lane[i]; }
    EI_HD T operator[](int i) const { return this->lane[i]; }
};

template <class T, int N> EI_HD even_view<T, N>::operator vec<T, N / 2>() const
{
    vec<T, N / 2> r;
#pragma unroll
    for (int i = 0; i < N / 2; ++i)
        r.lane[i] = lane[2 * i];
    return r;
}
template <class T, int N> EI_HD odd_view<T, N>::operator vec<T, N / 2>() const
{
    vec<T, N / 2> r;
#pragma unroll
    for (int i = 0; i < N / 2; ++i)
        r.lane[i] = lane[2 * i + 1];
    return r;
}
template <class T> EI_HD zyx_view<T>::operator vec<T, 3>() const
{
    vec<T, 3> r;
    r.lane[0] = lane[2];
    r.lane[1] = lane[1];
    r.lane[2] = lane[0];
    return r;
}

// Lane-wise operators: vector op vector, vector op scalar, scalar op vector; comparisons give OpenCL's int masks
// (-1 true, 0 false), which select() tests by their sign bit.
#define EI_BINARY(OP)                                                                                          \
    template <class T, int N> EI_HD vec<T, N> operator OP(vec<T, N> a, vec<T, N> b)                            \
    {                                                                                                          \
        _Pragma("unroll") for (int i = 0; i < N; ++i) a.lane[i] = a.lane[i] OP b.lane[i];                      \
        return a;                                                                                              \
    }                                                                                                          \
    template <class T, int N> EI_HD vec<T, N> operator OP(vec<T, N> a, typename same<T>::type b)               \
    {                                                                                                          \
        return a OP vec<T, N>(b);                                                                              \
    }                                                                                                          \
    template <class T, int N> EI_HD vec<T, N> operator OP(typename same<T>::type a, vec<T, N> b)               \
    {                                                                                                          \
        return vec<T, N>(a) OP b;                                                                              \
    }                                                                                                          \
    template <class T, int N, class S> EI_HD vec<T, N> &operator OP##=(vec<T, N> &a, S b)                      \
    {                                                                                                          \
        return a = a OP b;                                                                                     \
    }
EI_BINARY(+)
EI_BINARY(-)
EI_BINARY(*)
EI_BINARY(/)
EI_BINARY(&)
EI_BINARY(|)
EI_BINARY(>>)
EI_BINARY(<<)
#undef EI_BINARY

template <class T, int N> EI_HD vec<T, N> operator-(vec<T, N> a)
{
#pragma unroll
    for (int i = 0; i < N; ++i)
        a.lane[i] = -a.lane[i];
    return a;
}

#define EI_COMPARE(OP)                                                                                         \
    template <class T, int N> EI_HD vec<int, N> operator OP(vec<T, N> a, vec<T, N> b)                          \
    {                                                                                                          \
        vec<int, N> r;                                                                                         \
        _Pragma("unroll") for (int i = 0; i < N; ++i) r.lane[i] = a.lane[i] OP b.lane[i] ? -1 : 0;             \
        return r;                                                                                              \
    }                                                                                                          \
    template <class T, int N> EI_HD vec<int, N> operator OP(vec<T, N> a, typename same<T>::type b)             \
    {                                                                                                          \
        return a OP vec<T, N>(b);                                                                              \
    }
EI_COMPARE(<)
EI_COMPARE(<=)
EI_COMPARE(>)
EI_COMPARE(>=)
EI_COMPARE(==)
EI_COMPARE(!=)
#undef EI_COMPARE

// Lane-wise math: the same CUDA function (fmaxf, expf, ...) on each lane, as OpenCL defines its vector built-ins.
#define EI_UNARY(NAME, SCALAR)                                                                                 \
    template <int N> EI_HD vec<float, N> NAME(vec<float, N> a)                                                 \
    {                                                                                                          \
        _Pragma("unroll") for (int i = 0; i < N; ++i) a.lane[i] = SCALAR(a.lane[i]);                           \
        return a;                                                                                              \
    }
EI_UNARY(exp, expf)
EI_UNARY(log, logf)
EI_UNARY(tanh, tanhf)
EI_UNARY(sqrt, sqrtf)
EI_UNARY(fabs, fabsf)
EI_UNARY(floor, floorf)
EI_UNARY(ceil, ceilf)
#undef EI_UNARY

#define EI_BINARY_MATH(NAME, SCALAR)                                                                           \
    template <int N> EI_HD vec<float, N> NAME(vec<float, N> a, vec<float, N> b)                                \
    {                                                                                                          \
        _Pragma("unroll") for (int i = 0; i < N; ++i) a.lane[i] = SCALAR(a.lane[i], b.lane[i]);                \
        return a;                                                                                              \
    }
EI_BINARY_MATH(fmax, fmaxf)
EI_BINARY_MATH(fmin, fminf)
#undef EI_BINARY_MATH

template <int N> EI_HD vec<float, N> fma(vec<float, N> a, vec<float, N> b, vec<float, N> c)
{
#pragma unroll
    for (int i = 0; i < N; ++i)
        c.lane[i] = fmaf(a.lane[i], b.lane[i], c.lane[i]);
    return c;
}

template <class T, int N> EI_HD vec<T, N> clamp(vec<T, N> x, typename same<T>::type lo, typename same<T>::type hi)
{
#pragma unroll
    for (int i = 0; i < N; ++i)
        x.lane[i] = x.lane[i] < lo ? lo : x.lane[i] > hi ? hi : x.lane[i];
    return x;
}

// select(a, b, c): lane i is b[i] where c[i]'s sign bit is set (a comparison's -1), else a[i].
template <class T, int N> EI_HD vec<T, N> select(vec<T, N> a, vec<T, N> b, vec<int, N> c)
{
#pragma unroll
    for (int i = 0; i < N; ++i)
        a.lane[i] = c.lane[i] < 0 ? b.lane[i] : a.lane[i];
    return a;
}

// vloadN(offset, p) reads p[offset * N ... offset * N + N - 1]; vstoreN writes them. OpenCL requires only element
// alignment, so these are element loads (the compiler merges what it can prove aligned).
template <int N, class T> EI_HD vec<T, N> vload(size_t offset, const T *p)
{
    vec<T, N> r;
    p += offset * N;
#pragma unroll
    for (int i = 0; i < N; ++i)
        r.lane[i] = p[i];
    return r;
}
template <int N, class T> EI_HD void vstore(vec<T, N> v, size_t offset, T *p)
{
    p += offset * N;
#pragma unroll
    for (int i = 0; i < N; ++i)
        p[i] = v.lane[i];
}

// convert_<type>N: lane-wise C conversion (OpenCL's default, non-saturating, rounding toward zero for floats).
template <class D, class S, int N> EI_HD vec<D, N> convert(vec<S, N> v)
{
    vec<D, N> r;
#pragma unroll
    for (int i = 0; i < N; ++i)
        r.lane[i] = D(v.lane[i]);
    return r;
}

}  // namespace ocl

#define EI_VECTOR_TYPES(T)                                                                                     \
    typedef ocl::vec<T, 2> ocl_##T##2;                                                                         \
    typedef ocl::vec<T, 3> ocl_##T##3;                                                                         \
    typedef ocl::vec<T, 4> ocl_##T##4;                                                                         \
    typedef ocl::vec<T, 8> ocl_##T##8;                                                                         \
    typedef ocl::vec<T, 16> ocl_##T##16;
EI_VECTOR_TYPES(float)
EI_VECTOR_TYPES(int)
EI_VECTOR_TYPES(uchar)
EI_VECTOR_TYPES(char)
EI_VECTOR_TYPES(long)
EI_VECTOR_TYPES(ushort)
#undef EI_VECTOR_TYPES

// CUDA's own float4, int3, uchar3 ... are plain structs; OpenCL's names mean the vectors above from here on.
#define float2 ocl_float2
#define float3 ocl_float3
#define float4 ocl_float4
#define float8 ocl_float8
#define float16 ocl_float16
#define int2 ocl_int2
#define int3 ocl_int3
#define int4 ocl_int4
#define int8 ocl_int8
#define int16 ocl_int16
#define uchar2 ocl_uchar2
#define uchar3 ocl_uchar3
#define uchar4 ocl_uchar4
#define uchar8 ocl_uchar8
#define uchar16 ocl_uchar16
#define char2 ocl_char2
#define char3 ocl_char3
#define char4 ocl_char4
#define char8 ocl_char8
#define char16 ocl_char16
#define long2 ocl_long2
#define long3 ocl_long3
#define long4 ocl_long4
#define long8 ocl_long8
#define long16 ocl_long16
#define ushort2 ocl_ushort2
#define ushort3 ocl_ushort3
#define ushort4 ocl_ushort4
#define ushort8 ocl_ushort8
#define ushort16 ocl_ushort16

#define EI_VLOAD(N)                                                                                            \
    template <class T> EI_HD ocl::vec<T, N> vload##N(size_t offset, const T *p) { return ocl::vload<N>(offset, p); } \
    template <class T> EI_HD void vstore##N(ocl::vec<T, N> v, size_t offset, T *p) { ocl::vstore<N>(v, offset, p); }
EI_VLOAD(2)
EI_VLOAD(3)
EI_VLOAD(4)
EI_VLOAD(8)
EI_VLOAD(16)
#undef EI_VLOAD

#define EI_CONVERT(T, N)                                                                                       \
    template <class S> EI_HD ocl::vec<T, N> convert_##T##N(ocl::vec<S, N> v) { return ocl::convert<T>(v); }
EI_CONVERT(int, 3)
EI_CONVERT(uchar, 3)
#undef EI_CONVERT

// ---------------------------------------------------------------- half storage (fp16 packs: common.cl's data_t)

// OpenCL's storage-only half: a 16-bit pattern read and written through vload_half / vstore_half_rte, which widen
// to float and round to nearest even (PTX cvt); common.cl builds its vectors of halves from these. Not cuda_fp16.h's
// __half, which NVRTC does not include by default and whose mixed half/float operators are ambiguous here.
struct ei_half {
    unsigned short bits;
};
#define half ei_half

__device__ __forceinline__ float ei_half_to_float(ei_half h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
}
__device__ __forceinline__ ei_half ei_float_to_half(float f)
{
    ei_half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
    return h;
}
__device__ __forceinline__ float vload_half(size_t offset, const ei_half *p) { return ei_half_to_float(p[offset]); }
__device__ __forceinline__ void vstore_half_rte(float v, size_t offset, ei_half *p) { p[offset] = ei_float_to_half(v); }

