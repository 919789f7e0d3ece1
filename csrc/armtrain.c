/* The ARM of a training step on the CPU, forward and backward, in float32: what
 * coolchic_pl.model.armrate computes with a dozen tensor operations per chunk of latents,
 * here one chunk of CHUNK latents at a time whose rows ([row][CHUNK]: one per context,
 * feature or hidden unit) stay in the L1 and L2 caches.
 *
 * The forward gathers each latent's spatial contexts from the zero-ended flat latents and
 * its IFCE features from its coarser inputs, runs the residual ReLU layers and returns the
 * output layer plus the stabiliser: the raw (mu, log-scale). The backward recomputes that
 * for the chunk (cheaper than keeping every activation of every latent between the two
 * passes), takes the gradient of the raw outputs and accumulates every parameter's gradient
 * and every latent's through its contexts and IFCE inputs. Products run four outputs by
 * sixteen latents at a time in registers, and every sum in a fixed order (a chunk's sums in
 * float32, chunks added in float64), so the results depend on the inputs alone, not on
 * threads or on how a BLAS would split a product.
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

enum { CHUNK = 256, STEP = 16 }; /* latents per chunk; per step of the products (two vectors) */

static inline f32x8 relu8(f32x8 v) { return (f32x8)((i32x8)v & (v > 0.0f)); }

/* y[j][0..m) = bias[j] (0 without) + x[j] (with `residual`) + sum_i w(j, i) x[i], then a
 * ReLU (with `relu`), w(j, i) = w[j * row + i * column] (so that a transposed product reads
 * the same weights); x and y are [rows][CHUNK], m a multiple of STEP. */
NATIVE_VECTORISED
static void dense_chunk(const float *w, int64_t row, int64_t column, const float *bias, const float *x, int n_in,
                        int n_out, int residual, int relu, float *restrict y, int m) {
    for (int n0 = 0; n0 < m; n0 += STEP) {
        int j = 0;
        for (; j + 4 <= n_out; j += 4) {
            f32x8 sums[4][2];
            for (int u = 0; u < 4; u++) {
                const float start = bias ? bias[j + u] : 0.0f;
                sums[u][0] = sums[u][1] = start + (f32x8){0};
                if (residual) {
                    sums[u][0] += load8(x + (j + u) * CHUNK + n0);
                    sums[u][1] += load8(x + (j + u) * CHUNK + n0 + 8);
                }
            }
            for (int i = 0; i < n_in; i++) {
                const f32x8 low = load8(x + i * CHUNK + n0), high = load8(x + i * CHUNK + n0 + 8);
                for (int u = 0; u < 4; u++) {
                    const float weight = w[(j + u) * row + i * column];
                    sums[u][0] += weight * low;
                    sums[u][1] += weight * high;
                }
            }
            for (int u = 0; u < 4; u++) {
                store8(y + (j + u) * CHUNK + n0, relu ? relu8(sums[u][0]) : sums[u][0]);
                store8(y + (j + u) * CHUNK + n0 + 8, relu ? relu8(sums[u][1]) : sums[u][1]);
            }
        }
        for (; j < n_out; j++) {
            f32x8 low = (bias ? bias[j] : 0.0f) + (f32x8){0}, high = low;
            if (residual) {
                low += load8(x + j * CHUNK + n0);
                high += load8(x + j * CHUNK + n0 + 8);
            }
            for (int i = 0; i < n_in; i++) {
                const float weight = w[j * row + i * column];
                low += weight * load8(x + i * CHUNK + n0);
                high += weight * load8(x + i * CHUNK + n0 + 8);
            }
            store8(y + j * CHUNK + n0, relu ? relu8(low) : low);
            store8(y + j * CHUNK + n0 + 8, relu ? relu8(high) : high);
        }
    }
}

/* totals[j * n_b + i] += sum_n a[j][n] b[i][n] and, with `bias_totals`, bias_totals[j] +=
 * sum_n a[j][n], over n < m: a layer's weight and bias gradients from its output gradients
 * a and inputs b ([rows][CHUNK]). Four rows of a by two of b at a time, in registers. */
NATIVE_VECTORISED
static void reduce_chunk(const float *a, int n_a, const float *b, int n_b, int m, double *totals,
                         double *bias_totals) {
    int j = 0;
    for (; j < n_a; j += 4) {
        const int rows = n_a - j < 4 ? n_a - j : 4;
        int i = 0;
        for (; i + 2 <= n_b && rows == 4; i += 2) {
            f32x8 sums[4][2] = {{{0}}};
            for (int n = 0; n < m; n += 8) {
                const f32x8 first = load8(b + i * CHUNK + n), second = load8(b + (i + 1) * CHUNK + n);
                for (int u = 0; u < 4; u++) {
                    const f32x8 gradient = load8(a + (j + u) * CHUNK + n);
                    sums[u][0] += gradient * first;
                    sums[u][1] += gradient * second;
                }
            }
            for (int u = 0; u < 4; u++)
                for (int v = 0; v < 2; v++)
                    totals[(j + u) * n_b + i + v] += lanes8(sums[u][v]);
        }
        for (int u = 0; u < rows; u++)
            for (int k = i; k < n_b; k++)
                totals[(j + u) * n_b + k] += dot8(a + (j + u) * CHUNK, b + k * CHUNK, m);
    }
    if (bias_totals)
        for (int u = 0; u < n_a; u++)
            bias_totals[u] += sum8(a + u * CHUNK, m);
}

/* The rows of one chunk: inputs (contexts, then IFCE features), each hidden layer's output,
 * the IFCE inputs, and room for gradients. */
typedef struct {
    float *act[MAX_TRAIN_HIDDEN + 1], *inputs, *out, *grad, *grad_next, *grad_inputs;
} ChunkRows;

static float *chunk_rows(int rows) { return calloc((size_t)(rows > 0 ? rows : 1) * CHUNK, sizeof(float)); }

static void free_rows(ChunkRows *rows, int n_hidden) {
    for (int l = 0; l <= n_hidden; l++)
        free(rows->act[l]);
    free(rows->inputs), free(rows->out), free(rows->grad), free(rows->grad_next), free(rows->grad_inputs);
}

static int alloc_rows(const TrainArm *arm, ChunkRows *rows) {
    memset(rows, 0, sizeof *rows);
    int ok = 1;
    for (int l = 0; l <= arm->n_hidden; l++)
        ok &= (rows->act[l] = chunk_rows(arm->width)) != NULL;
    ok &= (rows->inputs = chunk_rows(MAX_IFCE_INPUTS)) != NULL && (rows->out = chunk_rows(2)) != NULL
          && (rows->grad = chunk_rows(arm->width)) != NULL && (rows->grad_next = chunk_rows(arm->width)) != NULL
          && (rows->grad_inputs = chunk_rows(MAX_IFCE_INPUTS)) != NULL;
    if (!ok)
        free_rows(rows, arm->n_hidden);
    return ok ? 0 : -1;
}

static inline const int64_t *input_index(const TrainSegment *segment, int s, int64_t n) {
    return segment->inputs + s * (segment->end - segment->start) + (n - segment->start);
}

/* row[t] = padded[index[t]] for t < m (the last of the `count` latents repeated past it);
 * nonzero when an index lies outside [0, limit], checked here rather than in a pass of its
 * own over every index (which cost as much as the backward's scatter). */
static inline int gather_row(const float *padded, const int64_t *index, int count, int m, int64_t limit,
                             float *row) {
    uint64_t outside = 0;
    for (int t = 0; t < m; t++) {
        const int64_t at = index[t < count ? t : count - 1];
        outside |= (uint64_t)at > (uint64_t)limit;
        row[t] = padded[outside ? 0 : at];
    }
    return outside != 0;
}

/* Latents n .. n + count - 1 (in one segment) through the ARM: rows->act and rows->out
 * filled for m = count rounded up to STEP columns (the extra ones repeat the last latent).
 * Nonzero, with nothing computed, when a context or IFCE input lies outside the latents. */
static inline __attribute__((always_inline)) int chunk_forward(const TrainArm *arm, const TrainSegment *segment,
                                                                const float *padded, const int64_t *spatial,
                                                                int64_t n, int count, int m, ChunkRows *rows) {
    const int width = arm->width, n_spatial = arm->n_spatial, n_features = width - n_spatial;
    float *x = rows->act[0];
    int outside = 0;
    for (int i = 0; i < n_spatial; i++)
        outside |= gather_row(padded, spatial + i * arm->n_latents + n, count, m, arm->n_latents, x + i * CHUNK);
    if (segment->layer >= 0) {
        const TrainLayer *ifce = &arm->ifce[segment->layer];
        for (int s = 0; s < ifce->n_in; s++)
            outside |= gather_row(padded, input_index(segment, s, n), count, m, arm->n_latents,
                                  rows->inputs + s * CHUNK);
        if (outside)
            return -1;
        dense_chunk(ifce->weight, ifce->n_in, 1, ifce->bias, rows->inputs, ifce->n_in, n_features, 0, 0,
                    x + n_spatial * CHUNK, m);
    } else if (outside)
        return -1;
    else
        memset(x + n_spatial * CHUNK, 0, sizeof(float) * CHUNK * (size_t)n_features);
    for (int l = 0; l < arm->n_hidden; l++)
        dense_chunk(arm->hidden[l].weight, width, 1, arm->hidden[l].bias, rows->act[l], width, width, 1, 1,
                    rows->act[l + 1], m);
    dense_chunk(arm->output.weight, width, 1, arm->output.bias, rows->act[arm->n_hidden], width, 2, 0, 0, rows->out,
                m);
    if (arm->has_stabiliser) {
        dense_chunk(arm->stabiliser.weight, width, 1, arm->stabiliser.bias, x, width, 2, 0, 0, rows->grad, m);
        for (int k = 0; k < 2; k++)
            for (int t = 0; t < m; t++)
                rows->out[k * CHUNK + t] += rows->grad[k * CHUNK + t];
    }
    return outside;
}

/* The next chunk: latents n .. n + *count - 1 of `segment` (chunks never straddle one), and
 * the columns computed for them, *count rounded up to STEP. */
static inline void chunk_size(const TrainSegment *segment, int64_t n, int *count, int *m) {
    *count = segment->end - n < CHUNK ? (int)(segment->end - n) : CHUNK;
    *m = (*count + STEP - 1) / STEP * STEP;
}

NATIVE_VECTORISED
int arm_train_forward(const TrainArm *arm, const float *padded, const int64_t *spatial, float *raw) {
    ChunkRows rows;
    if (alloc_rows(arm, &rows))
        return -1;
    for (const TrainSegment *segment = arm->segments; segment < arm->segments + arm->n_segments; segment++)
        for (int64_t n = segment->start; n < segment->end; n += CHUNK) {
            int count, m;
            chunk_size(segment, n, &count, &m);
            if (chunk_forward(arm, segment, padded, spatial, n, count, m, &rows)) {
                free_rows(&rows, arm->n_hidden);
                return -2;
            }
            memcpy(raw + n, rows.out, sizeof(float) * (size_t)count);
            memcpy(raw + arm->n_latents + n, rows.out + CHUNK, sizeof(float) * (size_t)count);
        }
    free_rows(&rows, arm->n_hidden);
    return 0;
}

/* grad_raw [2][n_latents] -> grad_padded += the latents' gradients through their contexts
 * and IFCE inputs; the parameters' gradients, in TrainArm order (each hidden layer's weight
 * and bias, the output's, the stabiliser's, each IFCE layer's), into `grads`. */
NATIVE_VECTORISED
int arm_train_backward(const TrainArm *arm, const float *padded, const int64_t *spatial, const float *grad_raw,
                       float *grad_padded, float *grads) {
    const int width = arm->width, n_spatial = arm->n_spatial, n_features = width - n_spatial;
    ChunkRows rows;
    double *totals = calloc((size_t)arm->n_parameters, sizeof(double));
    if (!totals || alloc_rows(arm, &rows)) {
        free(totals);
        return -1;
    }
    /* Where each layer's gradients start in `totals`. */
    double *hidden_totals[MAX_TRAIN_HIDDEN], *ifce_totals[MAX_IFCE_LAYERS];
    double *at = totals;
    for (int l = 0; l < arm->n_hidden; l++, at += width * width + width)
        hidden_totals[l] = at;
    double *output_totals = at, *stabiliser_totals = at + 2 * width + 2;
    at += (2 * width + 2) * (1 + arm->has_stabiliser);
    for (int l = 0; l < arm->n_ifce; l++) {
        ifce_totals[l] = at;
        at += (arm->ifce[l].n_in + 1) * n_features;
    }
    for (const TrainSegment *segment = arm->segments; segment < arm->segments + arm->n_segments; segment++)
    for (int64_t n = segment->start; n < segment->end; n += CHUNK) {
        int count, m;
        chunk_size(segment, n, &count, &m);
        if (chunk_forward(arm, segment, padded, spatial, n, count, m, &rows)) {
            free(totals);
            free_rows(&rows, arm->n_hidden);
            return -2;
        }
        float *g_out = rows.out, *g = rows.grad, *g_next = rows.grad_next;
        memset(g_out, 0, sizeof(float) * 2 * CHUNK);
        memcpy(g_out, grad_raw + n, sizeof(float) * (size_t)count);
        memcpy(g_out + CHUNK, grad_raw + arm->n_latents + n, sizeof(float) * (size_t)count);
        const float *x = rows.act[0];
        reduce_chunk(g_out, 2, rows.act[arm->n_hidden], width, m, output_totals, output_totals + 2 * width);
        dense_chunk(arm->output.weight, 1, width, NULL, g_out, 2, width, 0, 0, g, m);
        for (int l = arm->n_hidden - 1; l >= 0; l--) {
            const float *result = rows.act[l + 1];
            for (int j = 0; j < width; j++)
                for (int t = 0; t < m; t += 8)
                    store8(g + j * CHUNK + t,
                           (f32x8)((i32x8)load8(g + j * CHUNK + t) & (load8(result + j * CHUNK + t) > 0.0f)));
            reduce_chunk(g, width, rows.act[l], width, m, hidden_totals[l], hidden_totals[l] + width * width);
            dense_chunk(arm->hidden[l].weight, 1, width, NULL, g, width, width, 1, 0, g_next, m);
            float *swap = g;
            g = g_next, g_next = swap;
        }
        if (arm->has_stabiliser) {
            reduce_chunk(g_out, 2, x, width, m, stabiliser_totals, stabiliser_totals + 2 * width);
            dense_chunk(arm->stabiliser.weight, 1, width, NULL, g_out, 2, width, 0, 0, g_next, m);
            for (int j = 0; j < width; j++)
                for (int t = 0; t < m; t++)
                    g[j * CHUNK + t] += g_next[j * CHUNK + t];
        }
        for (int i = 0; i < n_spatial; i++) {
            const int64_t *index = spatial + i * arm->n_latents + n;
            for (int t = 0; t < count; t++)
                grad_padded[index[t]] += g[i * CHUNK + t];
        }
        if (segment->layer >= 0) {
            const TrainLayer *ifce = &arm->ifce[segment->layer];
            const float *g_features = g + n_spatial * CHUNK;
            reduce_chunk(g_features, n_features, rows.inputs, ifce->n_in, m, ifce_totals[segment->layer],
                         ifce_totals[segment->layer] + n_features * ifce->n_in);
            dense_chunk(ifce->weight, 1, ifce->n_in, NULL, g_features, n_features, ifce->n_in, 0, 0,
                        rows.grad_inputs, m);
            for (int s = 0; s < ifce->n_in; s++) {
                const int64_t *index = input_index(segment, s, n);
                for (int t = 0; t < count; t++)
                    grad_padded[index[t]] += rows.grad_inputs[s * CHUNK + t];
            }
        }
    }
    for (int64_t p = 0; p < arm->n_parameters; p++)
        grads[p] = (float)totals[p];
    free(totals);
    free_rows(&rows, arm->n_hidden);
    return 0;
}
