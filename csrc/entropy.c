/* Latent grid decoding: the fixed-point ARM, the Laplace table row and the range decoder,
 * one latent at a time in the coding order of coolchic_pl.bitstream.latents.
 *
 * The arithmetic is that of coolchic_pl.bitstream.armint and laplace_table (the NumPy
 * encoder side computes the same integers in batches); the range decoder is constriction's
 * queue RangeDecoder (32-bit words, 64-bit state, 24-bit probabilities) with its lazy
 * categorical model, whose interval bounds arrive precomputed in `cdf`.
 */
#include "native.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { PRECISION = 24, WORD_BITS = 32, ARM_BLOCK = 8 };

static int read_bit(GridInputs *in, int *bit) {
    if (in->bit_pos >= in->n_bits)
        return fail(in, "a bit stream ends before its last value");
    *bit = in->bits[in->bit_pos++] != 0;
    return 0;
}

/* Exp-Golomb of order `order` (coolchic_pl.bitstream.expgolomb.BitReader.read_expgolomb). */
static int read_expgolomb(GridInputs *in, int order, int64_t *value) {
    int q = 0, bit;
    for (;;) {
        if (read_bit(in, &bit))
            return -1;
        if (!bit)
            break;
        if (++q > MAX_EXPGOLOMB_PREFIX)
            return fail(in, "an exp-Golomb prefix is impossibly long");
    }
    int64_t suffix = 0;
    for (int i = 0; i < q + order; i++) {
        if (read_bit(in, &bit))
            return -1;
        suffix = suffix << 1 | bit;
    }
    *value = ((int64_t)1 << (order + q)) - ((int64_t)1 << order) + suffix;
    return 0;
}

/* sums[k] += weights[i][k] x column i of `in` ([d][m], ARM_BLOCK latents), for the two
 * outputs k of the ARM's output layer or of its stabiliser. */
static inline void add_two_outputs(const double *weights, const double *in, int d, int64_t m, f64x4 sums[2][2]) {
    for (int i = 0; i < d; i++) {
        const f64x4 low = load4(in + i * m), high = load4(in + i * m + 4);
        for (int k = 0; k < 2; k++) {
            const f64x4 weight = splat(weights[2 * i + k]);
            sums[k][0] += weight * low;
            sums[k][1] += weight * high;
        }
    }
}

/* The ARM in float64 with its scales folded into the weights, on a front held as
 * [width][m] (inputs in `x`, hidden activations in `h` and `next`) whose first `count`
 * columns, rounded up to a multiple of ARM_BLOCK (m being one), are latents: exact for
 * inputs within arm->fast_limit (armint.IntegerArm._largest_exact_input), so any
 * evaluation order or fused multiply-add gives the integers of the int64 path. Each output
 * is summed for ARM_BLOCK latents at a time, in registers. */
NATIVE_VECTORISED
static void arm_fast(const ArmTables *arm, const double *restrict x, double *restrict h, double *restrict next,
                     int64_t count, int64_t m, int64_t *restrict mu, int64_t *restrict log_scale) {
    const int d = arm->width;
    const double *input = x;
    for (int layer = 0; layer < arm->n_hidden; layer++) {
        const double *w = arm->fast_hidden + (size_t)layer * d * d, *b = arm->fast_hidden_bias + (size_t)layer * d;
        for (int64_t n0 = 0; n0 < count; n0 += ARM_BLOCK) {
            int j = 0;
            /* Four outputs at a time: eight independent sums hide the multiply-add latency. */
            for (; j + 4 <= d; j += 4) {
                f64x4 sums[4][2];
                for (int u = 0; u < 4; u++)
                    sums[u][0] = sums[u][1] = splat(b[j + u]);
                const double *weights = w + j, *column = input + n0;
                for (int i = 0; i < d; i++, weights += d, column += m) {
                    const f64x4 low = load4(column), high = load4(column + 4);
                    for (int u = 0; u < 4; u++) {
                        const f64x4 weight = splat(weights[u]);
                        sums[u][0] += weight * low;
                        sums[u][1] += weight * high;
                    }
                }
                for (int u = 0; u < 4; u++) {
                    store4(next + (j + u) * m + n0, relu_floor(sums[u][0]));
                    store4(next + (j + u) * m + n0 + 4, relu_floor(sums[u][1]));
                }
            }
            for (; j < d; j++) {
                f64x4 low = splat(b[j]), high = low;
                for (int i = 0; i < d; i++) {
                    const f64x4 weight = splat(w[i * d + j]);
                    low += weight * load4(input + i * m + n0);
                    high += weight * load4(input + i * m + n0 + 4);
                }
                store4(next + j * m + n0, relu_floor(low));
                store4(next + j * m + n0 + 4, relu_floor(high));
            }
        }
        double *swap = h;
        h = next, next = swap;
        input = h;
    }
    /* Both outputs together, the stabiliser's sums apart: eight independent chains. */
    for (int64_t n0 = 0; n0 < count; n0 += ARM_BLOCK) {
        f64x4 sums[2][2][2]; /* [branch: hidden, stabiliser][output][half] */
        for (int k = 0; k < 2; k++) {
            sums[0][k][0] = sums[0][k][1] = splat(arm->fast_output_bias[k]);
            sums[1][k][0] = sums[1][k][1] = splat(arm->fast_stabiliser ? arm->fast_stabiliser_bias[k] : 0.0);
        }
        add_two_outputs(arm->fast_output, input + n0, d, m, sums[0]);
        if (arm->fast_stabiliser)
            add_two_outputs(arm->fast_stabiliser, x + n0, d, m, sums[1]);
        for (int k = 0; k < 2; k++) {
            const f64x4 low = sums[0][k][0] + sums[1][k][0], high = sums[0][k][1] + sums[1][k][1];
            int64_t *restrict out = k ? log_scale : mu;
            for (int t = 0; t < 4; t++) {
                out[n0 + t] = (int64_t)copysign(floor(fabs(low[t]) + 0.5), low[t]);
                out[n0 + 4 + t] = (int64_t)copysign(floor(fabs(high[t]) + 0.5), high[t]);
            }
        }
    }
}

static int64_t round_shift(int64_t v, int bits) {
    return (v + (((int64_t)1 << (bits - 1)) - (v < 0))) >> bits;
}

/* The ARM in int64 (armint.IntegerArm._int64_call), for inputs beyond the float64 path's
 * proven range; wraps modulo 2^64 as NumPy's int64 does. */
static void arm_exact(const ArmTables *arm, const int64_t *x, int64_t out[2]) {
    const int d = arm->width;
    int64_t h[MAX_ARM_WIDTH], next[MAX_ARM_WIDTH];
    memcpy(h, x, sizeof(int64_t) * (size_t)d);
    for (int layer = 0; layer < arm->n_hidden; layer++) {
        const int64_t *w = arm->exact_hidden + (size_t)layer * d * d, *b = arm->exact_hidden_bias + (size_t)layer * d;
        for (int j = 0; j < d; j++) {
            int64_t acc = b[j] + h[j] * ARM_ONE;
            for (int i = 0; i < d; i++)
                acc += w[j * d + i] * h[i];
            next[j] = ((acc > 0 ? acc : 0) + ARM_ONE / 2) >> ARM_FRACTIONAL_BITS;
        }
        memcpy(h, next, sizeof(int64_t) * (size_t)d);
    }
    for (int k = 0; k < 2; k++) {
        int64_t acc = arm->exact_output_bias[k];
        for (int i = 0; i < d; i++)
            acc += arm->exact_output[k * d + i] * h[i];
        if (arm->exact_stabiliser) {
            acc += arm->exact_stabiliser_bias[k];
            for (int i = 0; i < d; i++)
                acc += arm->exact_stabiliser[k * d + i] * x[i];
        }
        out[k] = round_shift(acc, ARM_FRACTIONAL_BITS);
    }
}

/* The symbol whose interval [cdf[s], cdf[s + 1]) holds `quantile` (cdf[0] = 0, cdf[last] =
 * 2^24, increasing): the number of inner bounds at or below it, counted without a branch
 * (a binary search's loads and branches wait on one another). */
static inline int find_symbol(const uint32_t *cdf, int alphabet, uint32_t quantile) {
    int below = 0;
    for (int s = 1; s < alphabet; s++)
        below += cdf[s] <= quantile;
    return below;
}

static int decode_symbol(GridInputs *in, const uint32_t *cdf, int *symbol) {
    RangeState *s = &in->range;
    const uint64_t scale = s->range >> PRECISION;
    const uint64_t quantile = (s->point - s->lower) / scale;
    if (quantile >= (uint64_t)1 << PRECISION)
        return fail(in, "the range-coded latents are invalid for their probability model");
    const int found = find_symbol(cdf, in->rows->alphabet, (uint32_t)quantile);
    s->lower += scale * cdf[found];
    s->range = scale * (uint64_t)(cdf[found + 1] - cdf[found]);
    if (s->range < (uint64_t)1 << (64 - WORD_BITS)) {
        s->lower <<= WORD_BITS;
        s->range <<= WORD_BITS;
        s->point <<= WORD_BITS;
        if (s->word_pos < in->n_words)
            s->point |= in->words[s->word_pos++];
    }
    *symbol = found;
    return 0;
}

/* The latents of front f: rows first .. first + count - 1 (count <= 0 for an empty front). */
static inline void front_rows(const GridInputs *in, int64_t f, int64_t *first, int64_t *count) {
    *first = f < in->width ? 0 : (f - in->width + in->slope) / in->slope;
    const int64_t last = f / in->slope < in->height - 1 ? f / in->slope : in->height - 1;
    *count = last - *first + 1;
}

/* Where latent (y, x) sits in the bordered copy. */
static inline int64_t bordered(const GridInputs *in, int64_t y, int64_t x) {
    return (y + in->top) * in->padded_width + x + in->left;
}

/* The IFCE features of the latents (y, x) with y >> step = row, x >> step = column, step
 * being the finest source's shift (they read the same coarser latents), in 1/256 units:
 * zeros without sources. */
static void ifce_cell(const GridInputs *in, int64_t row, int64_t column, int step, int64_t *features) {
    const int n_features = in->arm->width - in->n_contexts;
    int64_t sources[MAX_IFCE_SOURCES];
    for (int s = 0; s < in->n_sources; s++) {
        const int coarser = in->source_shift[s] - step;
        sources[s] = in->flat[in->source_start[s] + (row >> coarser) * in->source_width[s] + (column >> coarser)]
                     * ARM_ONE;
    }
    for (int k = 0; k < n_features; k++) {
        int64_t acc = in->n_sources ? in->ifce_bias[k] : 0;
        for (int s = 0; s < in->n_sources; s++)
            acc += in->ifce_weight[k * in->n_sources + s] * sources[s];
        features[k] = in->n_sources ? round_shift(acc, ARM_FRACTIONAL_BITS) : 0;
    }
}

/* The IFCE features of the whole grid, computed before its latents (they depend on coarser
 * grids only), once per cell of 2^step x 2^step latents sharing them: in->features,
 * in->feature_step and in->feature_columns. -1 when out of memory. */
static int ifce_table(GridInputs *in) {
    const int n_features = in->arm->width - in->n_contexts;
    int step = 30;
    for (int s = 0; s < in->n_sources; s++)
        step = in->source_shift[s] < step ? in->source_shift[s] : step;
    step = in->n_sources ? step : 30;
    const int64_t rows = ((in->height - 1) >> step) + 1, columns = ((in->width - 1) >> step) + 1;
    in->features = malloc(sizeof(int64_t) * (size_t)(rows * columns * n_features + 1));
    if (!in->features)
        return -1;
    in->feature_step = step, in->feature_columns = columns;
    for (int64_t row = 0; row < rows; row++)
        for (int64_t column = 0; column < columns; column++)
            ifce_cell(in, row, column, step, in->features + (row * columns + column) * n_features);
    return 0;
}

/* The IFCE features of latent (y, x), from the grid's table. */
static inline const int64_t *ifce_features(const GridInputs *in, int64_t y, int64_t x) {
    const int n_features = in->arm->width - in->n_contexts;
    return in->features + ((y >> in->feature_step) * in->feature_columns + (x >> in->feature_step)) * n_features;
}

/* -limit <= v <= limit, for 0 <= limit < 2^62, in one comparison that wraps safely. */
static inline int within(int64_t v, int64_t limit) { return (uint64_t)v + (uint64_t)limit <= 2 * (uint64_t)limit; }

enum { WITHIN = 1, NONZERO = 2 };

/* The inputs of latent (y, x), at bordered position p, in 1/256 units (contexts, then IFCE
 * features) as column `column` of the [width][m] float64 inputs. WITHIN when the float64
 * path is exact for them, NONZERO when any of them is not 0. */
static inline int gather_fast(const GridInputs *in, int64_t y, int64_t x, int64_t p, double *inputs, int64_t column,
                              int64_t m, int64_t context_limit, int64_t feature_limit) {
    const int n_contexts = in->n_contexts, width = in->arm->width;
    int ok = 1;
    int64_t any = 0;
    for (int i = 0; i < n_contexts; i++) {
        const int64_t context = in->latents[p + in->deltas[i]];
        ok &= within(context, context_limit);
        any |= context;
        inputs[i * m + column] = (double)context * ARM_ONE;
    }
    const int64_t *features = ifce_features(in, y, x);
    for (int i = n_contexts; i < width; i++) {
        const int64_t feature = features[i - n_contexts];
        ok &= within(feature, feature_limit);
        any |= feature;
        inputs[i * m + column] = (double)feature;
    }
    return (ok ? WITHIN : 0) | (any ? NONZERO : 0);
}

/* The same inputs in int64 for the exact path (the scaling wraps as NumPy's shift does). */
static void gather_exact(const GridInputs *in, int64_t y, int64_t x, int64_t p, int64_t *exact) {
    for (int i = 0; i < in->n_contexts; i++)
        exact[i] = (int64_t)((uint64_t)in->latents[p + in->deltas[i]] << ARM_FRACTIONAL_BITS);
    memcpy(exact + in->n_contexts, ifce_features(in, y, x),
           sizeof(int64_t) * (size_t)(in->arm->width - in->n_contexts));
}

/* Symbols of front f's `count` latents from row `first` given their ARM outputs, written to the grid. */
static int decode_front(GridInputs *in, int64_t f, int64_t first, int64_t count, const int64_t *mu,
                        const int64_t *log_scale) {
    const RowConstants *rows = in->rows;
    for (int64_t n = 0; n < count; n++) {
        const int64_t out_mu = mu[n], out_log_scale = log_scale[n];
        const int64_t mu_rounded = round_shift(out_mu, ARM_FRACTIONAL_BITS);
        const int64_t clamped = out_log_scale < rows->low ? rows->low : out_log_scale > rows->high ? rows->high
                                                                                                     : out_log_scale;
        const int64_t row = round_shift(out_mu - mu_rounded * ARM_ONE, 4) * rows->n_scales
                            + ((clamped + rows->scale_bias) >> rows->bin_bits);
        if (row < 0 || row >= rows->n_rows)
            return fail(in, "inconsistent bitstream content (a probability model outside the table)");
        int symbol;
        if (decode_symbol(in, in->cdf + row * (rows->alphabet + 1), &symbol))
            return -1;
        int64_t residual = symbol - (rows->residual_range + 1);
        if (residual > rows->residual_range || residual < -rows->residual_range) {
            int64_t excess;
            if (read_expgolomb(in, 0, &excess))
                return -1;
            excess += rows->residual_range + 1;
            residual = residual > 0 ? excess : -excess;
        }
        const int64_t y = first + n;
        in->latents[bordered(in, y, f - in->slope * y)] = mu_rounded + residual;
    }
    return 0;
}

/* Front by front: the ARM of every latent of a front at once (their contexts lie in earlier
 * fronts), then its symbols in coding order. Latents whose inputs are all 0 (most of a
 * fine grid at low rates) take the ARM's output for zero inputs, computed once. The grid is
 * decoded in a bordered copy (in->latents) and copied out to `out` at the end. */
NATIVE_VECTORISED
int decode_grid(GridInputs *in, int64_t *out) {
    const int width = in->arm->width;
    const int64_t n_fronts = in->width + in->slope * (in->height - 1);
    int64_t longest = 1;
    for (int64_t f = 0; f < n_fronts; f++) {
        int64_t first, count;
        front_rows(in, f, &first, &count);
        longest = count > longest ? count : longest;
    }
    longest = (longest + ARM_BLOCK - 1) / ARM_BLOCK * ARM_BLOCK;
    const int64_t n_bordered = (in->top + in->height) * in->padded_width;
    /* Zeroed: the columns past a front's last latent are computed too, and must hold numbers. */
    double *scratch = calloc((size_t)(3 * width * longest), sizeof(double));
    int64_t *integers = malloc(sizeof(int64_t) * (size_t)(6 * longest + width));
    in->latents = calloc((size_t)n_bordered, sizeof(int64_t));
    if (!scratch || !integers || !in->latents || ifce_table(in)) {
        free(scratch), free(integers), free(in->latents), free(in->features);
        return fail(in, "out of memory");
    }
    double *x = scratch, *h = scratch + width * longest, *next = scratch + 2 * width * longest;
    int64_t *mu = integers, *log_scale = integers + longest, *packed_mu = integers + 2 * longest,
            *packed_log_scale = integers + 3 * longest, *column = integers + 4 * longest,
            *inexact = integers + 5 * longest, *exact = integers + 6 * longest;
    const int64_t feature_limit = (int64_t)in->arm->fast_limit, context_limit = feature_limit / ARM_ONE;
    arm_fast(in->arm, x, h, next, 1, longest, mu, log_scale);
    const int64_t zero_mu = mu[0], zero_log_scale = log_scale[0];
    int status = 0;
    for (int64_t f = 0; f < n_fronts && !status; f++) {
        int64_t first, m;
        front_rows(in, f, &first, &m);
        int64_t packed = 0;
        int all_within = 1;
        for (int64_t n = 0; n < m; n++) {
            const int64_t y = first + n, x_in_grid = f - in->slope * y;
            const int flags = gather_fast(in, y, x_in_grid, bordered(in, y, x_in_grid), x, packed, longest,
                                          context_limit, feature_limit);
            inexact[n] = !(flags & WITHIN);
            all_within &= flags & WITHIN;
            column[n] = flags & NONZERO ? packed++ : -1;
        }
        arm_fast(in->arm, x, h, next, packed, longest, packed_mu, packed_log_scale);
        for (int64_t n = 0; n < m; n++) {
            mu[n] = column[n] < 0 ? zero_mu : packed_mu[column[n]];
            log_scale[n] = column[n] < 0 ? zero_log_scale : packed_log_scale[column[n]];
        }
        if (!all_within)
            for (int64_t n = 0; n < m; n++)
                if (inexact[n]) {
                    const int64_t y = first + n, x_in_grid = f - in->slope * y;
                    int64_t result[2];
                    gather_exact(in, y, x_in_grid, bordered(in, y, x_in_grid), exact);
                    arm_exact(in->arm, exact, result);
                    mu[n] = result[0], log_scale[n] = result[1];
                }
        if (m > 0)
            status = decode_front(in, f, first, m, mu, log_scale);
    }
    for (int64_t y = 0; y < in->height && !status; y++)
        memcpy(out + y * in->width, in->latents + bordered(in, y, 0), sizeof(int64_t) * (size_t)in->width);
    free(scratch), free(integers), free(in->latents), free(in->features);
    in->latents = NULL, in->features = NULL;
    return status;
}

/* `count` signed exp-Golomb values of order `order` from the bits (one per byte) at `bit_pos`
 * (coolchic_pl.bitstream.expgolomb.BitReader.signed): the magnitude, then a sign bit (1 =
 * negative) after a non-zero one. */
int read_signed(GridInputs *in, int64_t count, int order, int64_t *values) {
    for (int64_t n = 0; n < count; n++) {
        int64_t magnitude;
        int negative = 0;
        if (read_expgolomb(in, order, &magnitude) || (magnitude && read_bit(in, &negative)))
            return -1;
        values[n] = negative ? -magnitude : magnitude;
    }
    return 0;
}
