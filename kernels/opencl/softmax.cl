// Softmax / LogSoftmax along one axis viewed as [outer][axis_len][inner]; one work-item per (outer, inner)
// line: max, sum of exp, then normalise (numerically stable).
// Work: dim 0 = outer * inner.

__kernel void softmax(__global const data_t *restrict X, __global data_t *restrict Y, int outer, int axis_len,
                      int inner, int log_softmax)
{
    const int line = get_global_id(0);
    if (line >= outer * inner)
        return;
    const size_t base = (size_t)(line / inner) * axis_len * inner + line % inner;
    float m = -INFINITY;
    for (int j = 0; j < axis_len; ++j)
        m = fmax(m, LD(X, base + (size_t)j * inner));
    float sum = 0.0f;
    for (int j = 0; j < axis_len; ++j)
        sum += exp(LD(X, base + (size_t)j * inner) - m);
    const float log_sum = log(sum);
    for (int j = 0; j < axis_len; ++j) {
        const float x = LD(X, base + (size_t)j * inner) - m;
        ST(Y, base + (size_t)j * inner, log_softmax ? x - log_sum : exp(x) / sum);
    }
}

// softmax_group (GPUs, few long lines such as a classifier's 1000 classes): one work-group of WG work-items
// per line; max and sum of exp are reduced in local memory. Work: dim 0 = lines * WG (local WG).
#ifdef WG
inline float group_reduce(__local float *scratch, float v, int is_max)
{
    const int lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int step = WG / 2; step > 0; step /= 2) {
        if (lid < step)
            scratch[lid] = is_max ? fmax(scratch[lid], scratch[lid + step]) : scratch[lid] + scratch[lid + step];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float result = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);  // scratch is reused by the next reduction
    return result;
}

__kernel void softmax_group(__global const data_t *restrict X, __global data_t *restrict Y, int outer, int axis_len,
                            int inner, int log_softmax)
{
    __local float scratch[WG];
    const int line = get_group_id(0);
    const int lid = get_local_id(0);
    const size_t base = (size_t)(line / inner) * axis_len * inner + line % inner;
    float m = -INFINITY;
    for (int j = lid; j < axis_len; j += WG)
        m = fmax(m, LD(X, base + (size_t)j * inner));
    m = group_reduce(scratch, m, 1);
    float sum = 0.0f;
    for (int j = lid; j < axis_len; j += WG)
        sum += exp(LD(X, base + (size_t)j * inner) - m);
    sum = group_reduce(scratch, sum, 0);
    const float log_sum = log(sum);
    for (int j = lid; j < axis_len; j += WG) {
        const float x = LD(X, base + (size_t)j * inner) - m;
        ST(Y, base + (size_t)j * inner, log_softmax ? x - log_sum : exp(x) / sum);
    }
}
#endif
