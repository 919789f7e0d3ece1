/* The upsampling of a training step on the CPU, forward and backward, in float32: what
 * coolchic_pl.model.upsampling computes with a hundred tensor operations a level (padding,
 * single-channel convolutions, interleaving reshapes, crops, concatenations), here as one
 * call each way.
 *
 * Every filter is single-channel, so each latent channel follows its own chain: grid g is
 * refined (an odd zero-padded filter, rows then columns, plus itself; the coarsest grid is
 * not), then upsampled by 2 into each finer grid's size in turn (two polyphase filters,
 * replicate-padded, rows then columns) up to the finest used grid, where it becomes one
 * output channel. The backward recomputes a chain's planes and walks it back, adding to the
 * latents' and the filters' gradients in a fixed order.
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

/* Where input sample `at` of a line of n samples is: clamped (edge padding), or -1 outside
 * the line (zero padding). */
static inline int64_t source(int64_t at, int64_t n, int zero) {
    if (at >= 0 && at < n)
        return at;
    return zero ? -1 : at < 0 ? 0 : n - 1;
}

/* A filter along a line: output P i + p (of `length`) = sum_t taps[p][t] line[i + t +
 * offset]. `extended` receives the line's samples offset .. offset + count + taps - 2
 * (count = ceil(length / P)), padded, so that every phase is a unit-stride loop. */
static inline int64_t extend_line(const float *line, int64_t n, int n_taps, int phases, int64_t length,
                                  int64_t offset, int zero, float *extended) {
    const int64_t span = (length + phases - 1) / phases + n_taps - 1;
    for (int64_t e = 0; e < span; e++) {
        const int64_t at = source(e + offset, n, zero);
        extended[e] = at < 0 ? 0.0f : line[at];
    }
    return span;
}

/* A pass along the rows of x [h][w] (`along_rows`) or along its columns: output line o (of
 * `length`) = sum_t taps[o % phases][t] x-line[o / phases + t + offset], the line extended
 * by its edge samples or by zeros. 0, or -1 when out of memory. */
NATIVE_VECTORISED
static int filter_pass(const float *x, int64_t h, int64_t w, int along_rows, const float *taps, int n_taps,
                       int phases, int64_t length, int64_t offset, int zero, float *restrict y) {
    if (along_rows) {
        for (int64_t o = 0; o < length; o++) {
            float *out = y + o * w;
            memset(out, 0, sizeof(float) * (size_t)w);
            const float *k = taps + (o % phases) * n_taps;
            for (int t = 0; t < n_taps; t++) {
                const int64_t row = source(o / phases + t + offset, h, zero);
                if (row < 0)
                    continue;
                const float *in = x + row * w;
                for (int64_t j = 0; j < w; j++)
                    out[j] += k[t] * in[j];
            }
        }
        return 0;
    }
    const int64_t count = (length + phases - 1) / phases;
    float *extended = malloc(sizeof(float) * (size_t)(2 * count + n_taps + 8));
    if (!extended)
        return -1;
    float *acc = extended + count + n_taps;
    for (int64_t r = 0; r < h; r++) {
        extend_line(x + r * w, w, n_taps, phases, length, offset, zero, extended);
        float *out = y + r * length;
        for (int p = 0; p < phases; p++) {
            const float *k = taps + p * n_taps;
            for (int64_t i = 0; i < count; i++)
                acc[i] = 0.0f;
            for (int t = 0; t < n_taps; t++)
                for (int64_t i = 0; i < count; i++)
                    acc[i] += k[t] * extended[i + t];
            for (int64_t i = 0; phases * i + p < length; i++)
                out[phases * i + p] = acc[i];
        }
    }
    free(extended);
    return 0;
}

/* The backward of filter_pass given its output gradient g: grad_x += the input's gradient,
 * grad_taps += the taps'. 0, or -1 when out of memory. */
NATIVE_VECTORISED
static int filter_pass_backward(const float *x, int64_t h, int64_t w, int along_rows, const float *taps,
                                int n_taps, int phases, int64_t length, int64_t offset, int zero, const float *g,
                                float *grad_x, double *grad_taps) {
    if (along_rows) {
        for (int64_t o = 0; o < length; o++) {
            const float *k = taps + (o % phases) * n_taps, *go = g + o * w;
            double *gk = grad_taps + (o % phases) * n_taps;
            for (int t = 0; t < n_taps; t++) {
                const int64_t row = source(o / phases + t + offset, h, zero);
                if (row < 0)
                    continue;
                float *gin = grad_x + row * w;
                for (int64_t j = 0; j < w; j++)
                    gin[j] += k[t] * go[j];
                gk[t] += dot8(go, x + row * w, w);
            }
        }
        return 0;
    }
    const int64_t count = (length + phases - 1) / phases;
    float *extended = malloc(sizeof(float) * (size_t)(3 * (count + n_taps) + 8));
    if (!extended)
        return -1;
    float *grad_extended = extended + count + n_taps, *phase_grad = grad_extended + count + n_taps;
    for (int64_t r = 0; r < h; r++) {
        const int64_t span = extend_line(x + r * w, w, n_taps, phases, length, offset, zero, extended);
        for (int64_t e = 0; e < span; e++)
            grad_extended[e] = 0.0f;
        const float *go = g + r * length;
        for (int p = 0; p < phases; p++) {
            const float *k = taps + p * n_taps;
            double *gk = grad_taps + p * n_taps;
            int64_t n = 0;
            for (; phases * n + p < length; n++)
                phase_grad[n] = go[phases * n + p];
            for (int t = 0; t < n_taps; t++) {
                for (int64_t i = 0; i < n; i++)
                    grad_extended[i + t] += k[t] * phase_grad[i];
                gk[t] += dot8(phase_grad, extended + t, n);
            }
        }
        float *gin = grad_x + r * w;
        for (int64_t e = 0; e < span; e++) {
            const int64_t at = source(e + offset, w, zero);
            if (at >= 0)
                gin[at] += grad_extended[e];
        }
    }
    free(extended);
    return 0;
}

/* The planes of one channel's chain, finest last: its grid's plane, the refined one, then
 * per upsampling step the rows pass and the result. */
typedef struct {
    float *planes[2 + 2 * MAX_LAYERS];
    int64_t heights[2 + 2 * MAX_LAYERS], widths[2 + 2 * MAX_LAYERS];
    int count;
} Chain;

static void free_chain(Chain *chain) {
    for (int p = 0; p < chain->count; p++)
        free(chain->planes[p]);
    chain->count = 0;
}

static float *add_plane(Chain *chain, int64_t h, int64_t w) {
    float *plane = malloc(sizeof(float) * (size_t)(h * w > 0 ? h * w : 1));
    if (plane) {
        chain->planes[chain->count] = plane;
        chain->heights[chain->count] = h, chain->widths[chain->count] = w;
        chain->count++;
    }
    return plane;
}

/* Grid g's level: the filters that refine it and that upsample into it. */
static inline int level_of(const TrainUpsampling *up, int g) { return up->n_grids - 2 - g; }

/* Channel `channel` of grid g through its chain; 0, or -1 when out of memory. */
static int chain_forward(const TrainUpsampling *up, const float *latents, int g, int channel, Chain *chain) {
    const int64_t h = up->heights[g], w = up->widths[g];
    float *plane = add_plane(chain, h, w);
    if (!plane)
        return -1;
    memcpy(plane, latents + up->starts[g] + channel * h * w, sizeof(float) * (size_t)(h * w));
    if (g < up->n_grids - 1) {
        const float *kernel = up->refine + level_of(up, g) * up->refine_taps;
        const int64_t half = up->refine_taps / 2;
        float *rows = add_plane(chain, h, w), *refined = rows ? add_plane(chain, h, w) : NULL;
        if (!refined)
            return -1;
        if (filter_pass(plane, h, w, 1, kernel, up->refine_taps, 1, h, -half, 1, rows)
            || filter_pass(rows, h, w, 0, kernel, up->refine_taps, 1, w, -half, 1, refined))
            return -1;
        for (int64_t k = 0; k < h * w; k++)
            refined[k] += plane[k];
    }
    for (int target = g - 1; target >= up->first_used; target--) {
        const int last = chain->count - 1;
        const int64_t in_h = chain->heights[last], in_w = chain->widths[last];
        const int64_t out_h = up->heights[target], out_w = up->widths[target];
        const float *phases = up->phases + level_of(up, target) * 2 * up->phase_taps;
        float *rows = add_plane(chain, out_h, in_w), *upsampled = rows ? add_plane(chain, out_h, out_w) : NULL;
        if (!upsampled)
            return -1;
        if (filter_pass(chain->planes[last], in_h, in_w, 1, phases, up->phase_taps, 2, out_h, up->phase_offset, 0,
                        rows)
            || filter_pass(rows, out_h, in_w, 0, phases, up->phase_taps, 2, out_w, up->phase_offset, 0, upsampled))
            return -1;
    }
    return 0;
}

/* The output channel of each grid channel, in grid order from the finest used one. */
static int64_t first_channel(const TrainUpsampling *up, int g) {
    int64_t channel = 0;
    for (int k = up->first_used; k < g; k++)
        channel += up->channels[k];
    return channel;
}

NATIVE_VECTORISED
int upsampling_train_forward(const TrainUpsampling *up, const float *latents, float *out) {
    const int64_t plane_size = up->heights[up->first_used] * up->widths[up->first_used];
    for (int g = up->first_used; g < up->n_grids; g++)
        for (int c = 0; c < up->channels[g]; c++) {
            Chain chain = {.count = 0};
            if (chain_forward(up, latents, g, c, &chain)) {
                free_chain(&chain);
                return -1;
            }
            memcpy(out + (first_channel(up, g) + c) * plane_size, chain.planes[chain.count - 1],
                   sizeof(float) * (size_t)plane_size);
            free_chain(&chain);
        }
    return 0;
}

/* grad_out [channels][H][W] -> grad_latents (written, zero where no grid reaches the output)
 * and the filters' gradients grad_phases [levels][2][taps], grad_refine [levels][taps]. */
NATIVE_VECTORISED
int upsampling_train_backward(const TrainUpsampling *up, const float *latents, const float *grad_out,
                              float *grad_latents, float *grad_phases, float *grad_refine) {
    const int levels = up->n_grids - 1;
    const int64_t plane_size = up->heights[up->first_used] * up->widths[up->first_used];
    double *totals = calloc((size_t)(levels * (2 * up->phase_taps + up->refine_taps) + 1), sizeof(double));
    if (!totals)
        return -1;
    double *phase_totals = totals, *refine_totals = totals + levels * 2 * up->phase_taps;
    memset(grad_latents, 0, sizeof(float) * (size_t)up->n_latents);
    int status = 0;
    for (int g = up->first_used; g < up->n_grids && !status; g++)
        for (int c = 0; c < up->channels[g] && !status; c++) {
            Chain chain = {.count = 0};
            Chain grads = {.count = 0};
            if ((status = chain_forward(up, latents, g, c, &chain)))
                break;
            for (int p = 0; p < chain.count && !status; p++)
                if (!add_plane(&grads, chain.heights[p], chain.widths[p]))
                    status = -1;
                else
                    memset(grads.planes[p], 0, sizeof(float) * (size_t)(chain.heights[p] * chain.widths[p]));
            if (!status) {
                memcpy(grads.planes[chain.count - 1], grad_out + (first_channel(up, g) + c) * plane_size,
                       sizeof(float) * (size_t)plane_size);
                int p = chain.count - 1;
                for (int target = up->first_used; target <= g - 1; target++, p -= 2) {
                    const int level = level_of(up, target);
                    const float *phases = up->phases + level * 2 * up->phase_taps;
                    double *gk = phase_totals + level * 2 * up->phase_taps;
                    const int64_t in_h = chain.heights[p - 2], in_w = chain.widths[p - 2];
                    const int64_t out_h = chain.heights[p], out_w = chain.widths[p];
                    status |= filter_pass_backward(chain.planes[p - 1], out_h, in_w, 0, phases, up->phase_taps, 2,
                                                   out_w, up->phase_offset, 0, grads.planes[p], grads.planes[p - 1],
                                                   gk);
                    status |= filter_pass_backward(chain.planes[p - 2], in_h, in_w, 1, phases, up->phase_taps, 2,
                                                   out_h, up->phase_offset, 0, grads.planes[p - 1],
                                                   grads.planes[p - 2], gk);
                }
                const int64_t h = up->heights[g], w = up->widths[g];
                if (g < up->n_grids - 1) {
                    /* planes 0 (grid), 1 (rows), 2 (refined = grid + columns of rows). */
                    const int level = level_of(up, g);
                    const float *kernel = up->refine + level * up->refine_taps;
                    const int64_t half = up->refine_taps / 2;
                    double *gk = refine_totals + level * up->refine_taps;
                    for (int64_t k = 0; k < h * w; k++)
                        grads.planes[0][k] += grads.planes[2][k];
                    status |= filter_pass_backward(chain.planes[1], h, w, 0, kernel, up->refine_taps, 1, w, -half, 1,
                                                   grads.planes[2], grads.planes[1], gk);
                    status |= filter_pass_backward(chain.planes[0], h, w, 1, kernel, up->refine_taps, 1, h, -half, 1,
                                                   grads.planes[1], grads.planes[0], gk);
                }
                float *into = grad_latents + up->starts[g] + c * h * w;
                for (int64_t k = 0; k < h * w; k++)
                    into[k] += grads.planes[0][k];
            }
            free_chain(&chain);
            free_chain(&grads);
        }
    for (int64_t k = 0; k < levels * 2 * up->phase_taps; k++)
        grad_phases[k] = (float)phase_totals[k];
    for (int64_t k = 0; k < levels * up->refine_taps; k++)
        grad_refine[k] = (float)refine_totals[k];
    free(totals);
    return status;
}
