/* A k x k synthesis layer of a training step on the CPU, forward and backward, in float32:
 * few channels (three in every preset) over many pixels, where oneDNN's convolution and its
 * backward spend most of their time outside the arithmetic. Replicate padding, as
 * coolchic_pl.model.synthesis pads before its convolution.
 *
 * Each output row reads k input rows of every channel, copied once and extended by their
 * edge samples, so that every product is a unit-stride loop over the row; the backward adds
 * into such extended rows and folds their ends back onto the edge samples. Sums run in a
 * fixed order.
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

/* The k input rows of every channel that output row `row` reads, each extended by `half`
 * edge samples on both sides: rows[(c * k + dy) * (w + 2 half) + half + x] = x[c][clamp(row + dy - half)][x]. */
static void extended_rows(const float *x, int channels, int64_t h, int64_t w, int k, int64_t row, float *rows) {
    const int half = k / 2;
    const int64_t span = w + 2 * half;
    for (int c = 0; c < channels; c++)
        for (int dy = 0; dy < k; dy++) {
            int64_t r = row + dy - half;
            r = r < 0 ? 0 : r >= h ? h - 1 : r;
            const float *line = x + (c * h + r) * w;
            float *into = rows + (c * k + dy) * span;
            for (int t = 0; t < half; t++) {
                into[t] = line[0];
                into[half + w + t] = line[w - 1];
            }
            memcpy(into + half, line, sizeof(float) * (size_t)w);
        }
}

NATIVE_VECTORISED
int conv_train_forward(const TrainConv *conv, const float *x, float *y) {
    const int k = conv->kernel, half = k / 2;
    const int64_t h = conv->height, w = conv->width, span = w + 2 * half;
    float *rows = malloc(sizeof(float) * (size_t)(conv->in_channels * k * span));
    if (!rows)
        return -1;
    for (int64_t row = 0; row < h; row++) {
        extended_rows(x, conv->in_channels, h, w, k, row, rows);
        for (int j = 0; j < conv->out_channels; j++) {
            float *out = y + (j * h + row) * w;
            const float bias = conv->bias[j];
            for (int64_t t = 0; t < w; t++)
                out[t] = bias;
            for (int c = 0; c < conv->in_channels; c++)
                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++) {
                        const float weight = conv->weight[((j * conv->in_channels + c) * k + dy) * k + dx];
                        const float *in = rows + (c * k + dy) * span + dx;
                        for (int64_t t = 0; t < w; t++)
                            out[t] += weight * in[t];
                    }
        }
    }
    free(rows);
    return 0;
}

NATIVE_VECTORISED
int conv_train_backward(const TrainConv *conv, const float *x, const float *grad_y, float *grad_x,
                        float *grad_weight, float *grad_bias) {
    const int k = conv->kernel, half = k / 2, in_channels = conv->in_channels, out_channels = conv->out_channels;
    const int64_t h = conv->height, w = conv->width, span = w + 2 * half;
    const int n_weights = out_channels * in_channels * k * k;
    float *rows = malloc(sizeof(float) * (size_t)(2 * in_channels * k * span));
    double *totals = calloc((size_t)(n_weights + out_channels), sizeof(double));
    if (!rows || !totals) {
        free(rows), free(totals);
        return -1;
    }
    float *grad_rows = rows + in_channels * k * span;
    memset(grad_x, 0, sizeof(float) * (size_t)(in_channels * h * w));
    for (int64_t row = 0; row < h; row++) {
        extended_rows(x, in_channels, h, w, k, row, rows);
        memset(grad_rows, 0, sizeof(float) * (size_t)(in_channels * k * span));
        for (int j = 0; j < out_channels; j++) {
            const float *g = grad_y + (j * h + row) * w;
            totals[n_weights + j] += sum8(g, w);
            for (int c = 0; c < in_channels; c++)
                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++) {
                        const int index = ((j * in_channels + c) * k + dy) * k + dx;
                        const float weight = conv->weight[index];
                        float *into = grad_rows + (c * k + dy) * span + dx;
                        totals[index] += dot8(g, rows + (c * k + dy) * span + dx, w);
                        for (int64_t t = 0; t < w; t++)
                            into[t] += weight * g[t];
                    }
        }
        /* Each extended row back onto its input row, the extensions onto the edge samples. */
        for (int c = 0; c < in_channels; c++)
            for (int dy = 0; dy < k; dy++) {
                int64_t r = row + dy - half;
                r = r < 0 ? 0 : r >= h ? h - 1 : r;
                float *line = grad_x + (c * h + r) * w;
                const float *from = grad_rows + (c * k + dy) * span;
                for (int t = 0; t < half; t++) {
                    line[0] += from[t];
                    line[w - 1] += from[half + w + t];
                }
                for (int64_t t = 0; t < w; t++)
                    line[t] += from[half + t];
            }
    }
    for (int p = 0; p < n_weights; p++)
        grad_weight[p] = (float)totals[p];
    for (int j = 0; j < out_channels; j++)
        grad_bias[j] = (float)totals[n_weights + j];
    free(rows), free(totals);
    return 0;
}
