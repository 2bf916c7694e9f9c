// Softmax / LogSoftmax along one axis viewed as [outer][axis_len][inner]; one work-item per (outer, inner)
// line: max, sum of exp, then normalise (numerically stable).
// Work: dim 0 = outer * inner.

__kernel void softmax(__global const float *restrict X, __global float *restrict Y, int outer, int axis_len,
                      int inner, int log_softmax)
{
    const int line = get_global_id(0);
    if (line >= outer * inner)
        return;
    const size_t base = (size_t)(line / inner) * axis_len * inner + line % inner;
    float m = -INFINITY;
    for (int j = 0; j < axis_len; ++j)
        m = fmax(m, X[base + (size_t)j * inner]);
    float sum = 0.0f;
    for (int j = 0; j < axis_len; ++j)
        sum += exp(X[base + (size_t)j * inner] - m);
    const float log_sum = log(sum);
    for (int j = 0; j < axis_len; ++j) {
        const float x = X[base + (size_t)j * inner] - m;
        Y[base + (size_t)j * inner] = log_softmax ? x - log_sum : exp(x) / sum;
    }
}
