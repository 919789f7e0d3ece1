/* The integer decoder after the latents: upsampling filters and synthesis layers.
 *
 * The arithmetic of coolchic_pl.fixedpoint.arithmetic: activations are integers (units of
 * 2^-16) held in doubles, weights multiples of 2^-12, every sum exact in float64 (proven from
 * the weights by check_layer_bound), so any summation order or fused multiply-add gives the
 * same floor. A layer ends in floor (its rounding half folded into the bias), an optional
 * residual and a clamp to +-ACTIVATION_LIMIT (or [0, limit] after a ReLU).
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

enum { BLOCK = 8 }; /* pixels per block: two vectors of four */

/* v clamped to [low, high], lane by lane, by comparison masks: no branch, whatever loop
 * surrounds it. */
static inline f64x4 clamp4(f64x4 v, double low, double high) {
    const f64x4 lows = splat(low), highs = splat(high);
    const i64x4 above = v > lows, below = v < highs;
    v = (f64x4)(((i64x4)v & above) | ((i64x4)lows & ~above));
    return (f64x4)(((i64x4)v & below) | ((i64x4)highs & ~below));
}

static inline double clamp_range(double v, double low, double high) { return v < low ? low : v > high ? high : v; }

static inline double clamp_activation(double v) { return clamp_range(v, -ACTIVATION_LIMIT, ACTIVATION_LIMIT); }

/* One layer on a block of BLOCK pixels: out[j][BLOCK] (row stride BLOCK) from the inputs
 * in + offsets[i], BLOCK consecutive values each; `source` (row stride `source_stride`) is
 * the residual input of a residual layer, NULL otherwise. */
NATIVE_VECTORISED
static void dense_block(const DenseLayer *layer, const double *restrict in, const int64_t *restrict offsets,
                        const double *source, int64_t source_stride, double *restrict out) {
    const int n_in = layer->n_in, n_out = layer->n_out;
    const double *w = layer->weight, *b = layer->bias;
    const double low = layer->relu ? 0.0 : -ACTIVATION_LIMIT;
    int j = 0;
    for (; j + 4 <= n_out; j += 4) {
        f64x4 sums[4][2];
        for (int u = 0; u < 4; u++)
            sums[u][0] = sums[u][1] = splat(b[j + u]);
        const double *rows[4] = {w + (j + 0) * n_in, w + (j + 1) * n_in, w + (j + 2) * n_in, w + (j + 3) * n_in};
        for (int i = 0; i < n_in; i++) {
            const double *column = in + offsets[i];
            const f64x4 first = load4(column), second = load4(column + 4);
            for (int u = 0; u < 4; u++) {
                const f64x4 weight = splat(rows[u][i]);
                sums[u][0] += weight * first;
                sums[u][1] += weight * second;
            }
        }
        for (int u = 0; u < 4; u++)
            for (int half = 0; half < 2; half++)
                store4(out + (j + u) * BLOCK + 4 * half, floor4(sums[u][half]));
    }
    for (; j < n_out; j++) {
        f64x4 first = splat(b[j]), second = first;
        for (int i = 0; i < n_in; i++) {
            const f64x4 weight = splat(w[j * n_in + i]);
            first += weight * load4(in + offsets[i]);
            second += weight * load4(in + offsets[i] + 4);
        }
        store4(out + j * BLOCK, floor4(first));
        store4(out + j * BLOCK + 4, floor4(second));
    }
    /* floor(sum), plus the residual source, then the layer's clamp. */
    for (int c = 0; c < n_out; c++)
        for (int half = 0; half < BLOCK; half += 4) {
            f64x4 v = load4(out + c * BLOCK + half);
            if (source)
                v += load4(source + c * source_stride + half);
            store4(out + c * BLOCK + half, clamp4(v, low, ACTIVATION_LIMIT));
        }
}

/* A run of 1x1 layers on [channels][n] pixels, BLOCK pixels at a time, the hidden
 * activations of a block staying in two small buffers; with `accumulate`, its output is
 * added to y and clamped (a stabiliser's) rather than written. */
int pointwise_run(const DenseLayer *layers, int n_layers, const double *x, int n_in, double *y, int64_t n,
                  int accumulate) {
    int widest = n_in;
    for (int l = 0; l < n_layers; l++)
        widest = layers[l].n_out > widest ? layers[l].n_out : widest;
    double *scratch = malloc(sizeof(double) * 2 * BLOCK * (size_t)widest);
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)widest);
    if (!scratch || !offsets) {
        free(scratch), free(offsets);
        return -1;
    }
    for (int i = 0; i < widest; i++)
        offsets[i] = (int64_t)i * BLOCK;
    double *buffers[2] = {scratch, scratch + (size_t)widest * BLOCK};
    const int n_out = layers[n_layers - 1].n_out;
    for (int64_t p0 = 0; p0 < n; p0 += BLOCK) {
        const int count = n - p0 < BLOCK ? (int)(n - p0) : BLOCK;
        double *current = buffers[0];
        for (int c = 0; c < n_in; c++) {
            memcpy(current + c * BLOCK, x + c * n + p0, sizeof(double) * (size_t)count);
            memset(current + c * BLOCK + count, 0, sizeof(double) * (size_t)(BLOCK - count));
        }
        for (int l = 0; l < n_layers; l++) {
            double *next = current == buffers[0] ? buffers[1] : buffers[0];
            dense_block(&layers[l], current, offsets, layers[l].residual ? current : NULL, BLOCK, next);
            current = next;
        }
        for (int c = 0; c < n_out; c++)
            if (accumulate)
                for (int t = 0; t < count; t++)
                    y[c * n + p0 + t] = clamp_activation(y[c * n + p0 + t] + current[c * BLOCK + t]);
            else
                memcpy(y + c * n + p0, current + c * BLOCK, sizeof(double) * (size_t)count);
    }
    free(scratch), free(offsets);
    return 0;
}

/* A k x k layer with replicate padding on [channels][height][width], row by row: the k
 * input rows of every channel an output row reads are copied once, extended by their
 * nearest sample (`half` on each side, then enough for a last whole block), and
 * dense_block reads its k x k x channels inputs (channel, dy, dx order, as the weights)
 * straight from them. */
int spatial_layer(const DenseLayer *layer, int kernel, const double *x, int channels, int64_t height, int64_t width,
                  double *y) {
    const int half = kernel / 2, n_in = channels * kernel * kernel;
    const int64_t padded_width = width + 2 * half + BLOCK;
    double *rows = malloc(sizeof(double) * (size_t)(channels * kernel * padded_width));
    double *out = malloc(sizeof(double) * BLOCK * (size_t)layer->n_out);
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)n_in);
    if (!rows || !out || !offsets) {
        free(rows), free(out), free(offsets);
        return -1;
    }
    for (int c = 0; c < channels; c++)
        for (int dy = 0; dy < kernel; dy++)
            for (int dx = 0; dx < kernel; dx++)
                offsets[(c * kernel + dy) * kernel + dx] = (c * kernel + dy) * padded_width + dx;
    /* Channel c's own sample at (row, x) is in its dy = half copy, dx = half along. */
    const double *source = layer->residual ? rows + half * padded_width + half : NULL;
    for (int64_t row = 0; row < height; row++) {
        for (int c = 0; c < channels; c++)
            for (int dy = 0; dy < kernel; dy++) {
                int64_t r = row + dy - half;
                r = r < 0 ? 0 : r >= height ? height - 1 : r;
                const double *line = x + (c * height + r) * width;
                double *copy = rows + (c * kernel + dy) * padded_width;
                for (int t = 0; t < half; t++)
                    copy[t] = line[0];
                memcpy(copy + half, line, sizeof(double) * (size_t)width);
                for (int64_t t = half + width; t < padded_width; t++)
                    copy[t] = line[width - 1];
            }
        for (int64_t x0 = 0; x0 < width; x0 += BLOCK) {
            const int count = width - x0 < BLOCK ? (int)(width - x0) : BLOCK;
            dense_block(layer, rows + x0, offsets, source ? source + x0 : NULL, kernel * padded_width, out);
            for (int c = 0; c < layer->n_out; c++)
                memcpy(y + (c * height + row) * width + x0, out + c * BLOCK, sizeof(double) * (size_t)count);
        }
    }
    free(rows), free(out), free(offsets);
    return 0;
}


/* Input index `k` of a filter whose inputs are padded by `mode`: the nearest one (EDGE), or
 * -1 for a zero (ZERO). */
static inline int64_t padded_index(int64_t k, int64_t length, int mode) {
    if (k >= 0 && k < length)
        return k;
    return mode == PAD_EDGE ? (k < 0 ? 0 : length - 1) : -1;
}

/* y[o][...] = clamp(floor(1/2 + sum_t taps[p][t] x[i + t + offset][...])), o = phases * i + p,
 * for the first `out_rows` outputs o along the rows (dim -2) of [planes][in_rows][width], the
 * rows outside x padded by `mode`: the phases' outputs interleave (2 phases: a 2x upsampling,
 * 1 phase: a filter). */
NATIVE_VECTORISED
void filter_rows(const double *x, int64_t planes, int64_t in_rows, int64_t width, const double *taps, int n_taps,
                 int phases, int64_t out_rows, int64_t offset, int mode, double *y) {
    for (int64_t plane = 0; plane < planes; plane++)
        for (int64_t o = 0; o < out_rows; o++) {
            const int64_t i = o / phases;
            const double *phase_taps = taps + (o % phases) * n_taps;
            double *restrict out = y + (plane * out_rows + o) * width;
            for (int64_t c = 0; c < width; c++)
                out[c] = 0.5;
            for (int t = 0; t < n_taps; t++) {
                const double tap = phase_taps[t];
                const int64_t row = padded_index(i + t + offset, in_rows, mode);
                if (tap == 0.0 || row < 0)
                    continue;
                const double *restrict in = x + (plane * in_rows + row) * width;
                for (int64_t c = 0; c < width; c++)
                    out[c] += tap * in[c];
            }
            for (int64_t c = 0; c < width; c++)
                out[c] = clamp_activation(__builtin_floor(out[c]));
        }
}

/* The same along the columns (dim -1) of [lines][in_width] into [lines][out_width]: each line
 * is first copied with its padding, so that the sums run over contiguous inputs. Returns -1
 * when that copy cannot be allocated. */
NATIVE_VECTORISED
int filter_columns(const double *x, int64_t lines, int64_t in_width, const double *taps, int n_taps, int phases,
                   int64_t out_width, int64_t offset, int mode, double *y) {
    const int64_t per_phase = (out_width + phases - 1) / phases, span = per_phase + n_taps - 1;
    double *line_copy = malloc(sizeof(double) * (size_t)(span > 0 ? span : 1));
    if (!line_copy)
        return -1;
    double sums[MAX_FILTER_PHASES][FILTER_CHUNK];
    for (int64_t line = 0; line < lines; line++) {
        const double *in = x + line * in_width;
        for (int64_t k = 0; k < span; k++) {
            const int64_t column = padded_index(k + offset, in_width, mode);
            line_copy[k] = column < 0 ? 0.0 : in[column];
        }
        double *out = y + line * out_width;
        for (int64_t j0 = 0; j0 < per_phase; j0 += FILTER_CHUNK) {
            const int64_t count = per_phase - j0 < FILTER_CHUNK ? per_phase - j0 : FILTER_CHUNK;
            for (int p = 0; p < phases; p++) {
                const double *phase_taps = taps + p * n_taps;
                for (int64_t j = 0; j < count; j++)
                    sums[p][j] = 0.5;
                for (int t = 0; t < n_taps; t++) {
                    const double tap = phase_taps[t];
                    if (tap == 0.0)
                        continue;
                    for (int64_t j = 0; j < count; j++)
                        sums[p][j] += tap * line_copy[j0 + j + t];
                }
            }
            for (int64_t j = 0; j < count; j++)
                for (int p = 0; p < phases; p++)
                    if ((j0 + j) * phases + p < out_width)
                        out[(j0 + j) * phases + p] = clamp_activation(__builtin_floor(sums[p][j]));
        }
    }
    free(line_copy);
    return 0;
}

/* Backward warp of integer samples [channels][height][width] by flows [2][height][width] in
 * 1/64 pel, borders replicated (coolchic_pl.fixedpoint.warp): output = floor(1/2 + sum_r sum_k
 * taps_y[r] taps_x[k] sample / 2^16) with the taps in 2^-16 units, in int64, exact. The flow of
 * a pixel is base_flow plus, with a motion output [2][height][width] (activation units), its
 * 1/64-pel value floor(1/2 + motion / 2^10); the flows used go to `flows_out`. */
void warp(const double *samples, int channels, int64_t height, int64_t width, const int64_t *base_flow,
          const double *motion, const int64_t *table, int n_taps, double *out, int64_t *flows_out) {
    const int64_t plane = height * width;
    const double flow_unit = (double)(1 << (FRACTION_BITS - WARP_POSITION_BITS));
    for (int64_t y = 0; y < height; y++)
        for (int64_t x = 0; x < width; x++) {
            const int64_t at = y * width + x;
            int64_t dx = base_flow[at], dy = base_flow[plane + at];
            if (motion) {
                dx += (int64_t)__builtin_floor(motion[at] / flow_unit + 0.5);
                dy += (int64_t)__builtin_floor(motion[plane + at] / flow_unit + 0.5);
            }
            flows_out[at] = dx, flows_out[plane + at] = dy;
            const int64_t *taps_x = table + (dx & (WARP_POSITIONS - 1)) * n_taps;
            const int64_t *taps_y = table + (dy & (WARP_POSITIONS - 1)) * n_taps;
            /* floor(flow / 64) + position + offset, the offset from -n/2 + 1 */
            const int64_t left = (dx >> WARP_POSITION_BITS) + x - n_taps / 2 + 1;
            const int64_t top = (dy >> WARP_POSITION_BITS) + y - n_taps / 2 + 1;
            int64_t columns[MAX_WARP_TAPS], rows[MAX_WARP_TAPS], weights[MAX_WARP_TAPS][MAX_WARP_TAPS];
            for (int k = 0; k < n_taps; k++) {
                const int64_t c = left + k, r = top + k;
                columns[k] = c < 0 ? 0 : c >= width ? width - 1 : c;
                rows[k] = (r < 0 ? 0 : r >= height ? height - 1 : r) * width;
            }
            for (int r = 0; r < n_taps; r++)
                for (int k = 0; k < n_taps; k++)
                    weights[r][k] = taps_y[r] * taps_x[k];
            for (int c = 0; c < channels; c++) {
                const double *source = samples + c * plane;
                int64_t total = 0;
                for (int r = 0; r < n_taps; r++)
                    for (int k = 0; k < n_taps; k++)
                        total += weights[r][k] * (int64_t)source[rows[r] + columns[k]];
                out[c * plane + at] = (double)((total + ((int64_t)1 << (2 * WARP_TAP_BITS - FRACTION_BITS - 1)))
                                               >> (2 * WARP_TAP_BITS - FRACTION_BITS));
            }
        }
}

/* A frame's samples from its warped predictions (coolchic_pl.fixedpoint.samples.inter_samples):
 * with two, their blend by beta = clamp(motion_beta + 2^15, 0, 2^16) (2^15 without a motion
 * output), rounded; then, with a residue output [4][n], alpha = clamp(residue[3] + 2^15, 0,
 * 2^16) times the prediction, rounded, plus residue[c] x max_value; finally divided by 2^16,
 * rounded and clamped to [0, max_value]. Every product and sum is an integer below 2^53. */
void blend(const double *first, const double *second, const double *beta, const double *residue, int64_t n,
           double max_value, double *out) {
    const double unit = (double)(1 << FRACTION_BITS), half_unit = unit / 2;
    for (int c = 0; c < 3; c++)
        for (int64_t i = 0; i < n; i++) {
            double prediction = first[c * n + i];
            if (second) {
                const double weight = beta ? clamp_range(beta[i] + half_unit, 0.0, unit) : half_unit;
                prediction = __builtin_floor((weight * prediction + (unit - weight) * second[c * n + i]) / unit + 0.5);
            }
            double value = prediction;
            if (residue) {
                const double alpha = clamp_range(residue[3 * n + i] + half_unit, 0.0, unit);
                value = __builtin_floor(alpha * prediction / unit + 0.5) + residue[c * n + i] * max_value;
            }
            out[c * n + i] = clamp_range(__builtin_floor(value / unit + 0.5), 0.0, max_value);
        }
}

/* An image's samples from its synthesis output x [channels][n] in activation units
 * (coolchic_pl.fixedpoint.samples.image_samples): low[c] + floor(1/2 + x span[c] / 2^16),
 * clamped to [0, max_value]; exact, every product being an integer below 2^53. */
NATIVE_VECTORISED
void image_samples(const double *x, int channels, int64_t n, const double *low, const double *span,
                   double max_value, double *out) {
    const double unit = (double)(1 << FRACTION_BITS);
    for (int c = 0; c < channels; c++)
        for (int64_t i = 0; i < n; i++)
            out[c * n + i] = clamp_range(low[c] + __builtin_floor(x[c * n + i] * span[c] / unit + 0.5), 0.0, max_value);
}
