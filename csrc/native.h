/* Shared declarations of coolchic_pl._native, the compiled part of the decoder. */
#ifndef COOLCHIC_NATIVE_H
#define COOLCHIC_NATIVE_H

#include <stdint.h>

#define ARM_FRACTIONAL_BITS 8
#define ARM_ONE 256
#define MAX_ARM_WIDTH 128
#define MAX_EXPGOLOMB_PREFIX 40
#define MAX_IFCE_SOURCES 16
#define ACTIVATION_LIMIT (4096.0 * 65536.0) /* fixedpoint.arithmetic.ACTIVATION_LIMIT */
#define MAX_LAYERS 64
#define MAX_CHANNELS 1024
#define MAX_FILTER_PHASES 2
#define FILTER_CHUNK 256
#define FRACTION_BITS 16 /* fixedpoint.arithmetic.FRACTION_BITS */
#define WARP_POSITION_BITS 6 /* fixedpoint.warp.FLOW_PRECISION_BITS */
#define WARP_POSITIONS (1 << WARP_POSITION_BITS)
#define WARP_TAP_BITS 16 /* fixedpoint.warp.TAP_BITS */
#define MAX_WARP_TAPS 16
#define MAX_TRAIN_HIDDEN 16
#define MAX_IFCE_LAYERS 16
#define MAX_IFCE_INPUTS 64
#define MAX_TRAIN_SEGMENTS 64
#define MAX_GRIDS 32

/* Loops that gain from wider vectors get an AVX2/FMA clone picked at load time on x86-64.
 * The decoder's sums are exact (integers within float64's exact range), so every clone
 * gives the same values; the training kernels' float32 sums are the same on one machine,
 * run after run, and may differ in their last bits between clones, as training figures may
 * between CPUs. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define NATIVE_VECTORISED __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NATIVE_VECTORISED
#endif

/* Four doubles: GCC and Clang vector extensions, two SSE2 operations each in the default
 * build, one AVX2 operation in the x86-64-v3 clones. */
typedef double f64x4 __attribute__((vector_size(32)));

typedef int64_t i64x4 __attribute__((vector_size(32)));

static inline f64x4 splat(double value) { return (f64x4){value, value, value, value}; }

/* Lane by lane, v where mask is set (a comparison's -1), else +0.0: one bitwise and, where
 * converting the mask to doubles has no AVX2 instruction and compiles to scalar code. */
static inline f64x4 masked4(f64x4 v, i64x4 mask) { return (f64x4)((i64x4)v & mask); }

static inline f64x4 load4(const double *from) {
    f64x4 value;
    __builtin_memcpy(&value, from, sizeof value);
    return value;
}

static inline void store4(double *to, f64x4 value) { __builtin_memcpy(to, &value, sizeof value); }

/* floor(v), lane by lane, for |v| < 2^51 (every sum the decoder floors is below 2^53 in units
 * of 2^-8 or finer): adding and subtracting 1.5 x 2^52 rounds to the nearest integer, and
 * the comparison steps down where that rounded up. Vectorises where a floor instruction
 * may not exist (SSE2). */
static inline f64x4 floor4(f64x4 v) {
    const f64x4 magic = splat(0x1.8p52);
    const f64x4 nearest = (v + magic) - magic;
    return nearest - masked4(splat(1.0), nearest > v);
}

/* max(floor(v), 0): what ends a hidden ARM layer whose rounding half is in its bias. */
static inline f64x4 relu_floor(f64x4 v) {
    const f64x4 floored = floor4(v);
    return masked4(floored, floored > 0.0);
}

typedef struct {
    int width, n_hidden;
    const double *fast_hidden, *fast_hidden_bias, *fast_output, *fast_output_bias;
    const double *fast_stabiliser, *fast_stabiliser_bias; /* NULL without a stabiliser */
    double fast_limit;                                    /* in 1/256 units */
    const int64_t *exact_hidden, *exact_hidden_bias, *exact_output, *exact_output_bias;
    const int64_t *exact_stabiliser, *exact_stabiliser_bias;
} ArmTables;

typedef struct {
    int64_t low, high, scale_bias;
    int bin_bits, n_scales, n_rows, residual_range, alphabet;
} RowConstants;

typedef struct {
    uint64_t lower, range, point;
    int64_t word_pos;
} RangeState;

typedef struct {
    const uint32_t *words;
    int64_t n_words;
    RangeState range;
    const uint8_t *bits; /* escape bits, one per byte */
    int64_t n_bits, bit_pos;
    /* The grid, coded front by front: front f holds the latents (y, f - slope * y), top to
     * bottom (coolchic_pl.bitstream.latents.grid_plan). They are decoded into a copy bordered
     * by `top` zero rows and `left` and `right` zero columns, wide enough for every context,
     * so the contexts of the latent at bordered position p are p + deltas. */
    int64_t height, width, slope, top, left, padded_width;
    int64_t deltas[MAX_ARM_WIDTH];
    int64_t *latents; /* [height][width], the decoded grid */
    /* Inter-feature contexts (width - n_contexts of them): feature k of the latent (y, x) is
     * round(sum_s weight[k][s] flat[source_s(y, x)] + bias[k]), source_s(y, x) = start_s +
     * (y >> shift_s) * width_s + (x >> shift_s); 0 without sources. */
    const int64_t *ifce_weight, *ifce_bias, *flat;
    int n_sources;
    int64_t source_start[MAX_IFCE_SOURCES], source_width[MAX_IFCE_SOURCES];
    int source_shift[MAX_IFCE_SOURCES];
    /* Computed by decode_grid: the features of each cell of 2^feature_step latents square,
     * [cell row][feature_columns][features]. */
    int64_t *features, feature_columns;
    int feature_step;
    int n_contexts;
    const uint32_t *cdf; /* [rows][alphabet + 1] interval bounds */
    const ArmTables *arm;
    const RowConstants *rows;
    const char *error;
} GridInputs;

static inline int fail(GridInputs *in, const char *message) {
    in->error = message;
    return -1;
}

/* Decodes the grid into out [height][width]; -1 with in->error set on a damaged stream. */
int decode_grid(GridInputs *in, int64_t *out);
int read_signed(GridInputs *in, int64_t count, int order, int64_t *values);

/* Eight floats, for the training kernels (armtrain.c, upsampling.c, convtrain.c). Scalars
 * meet them as `scalar * vector`: GCC broadcasts that with one instruction, where a {v, v,
 * ...} initialiser compiles to eight lane inserts. */
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

static inline f32x8 load8(const float *from) {
    f32x8 value;
    __builtin_memcpy(&value, from, sizeof value);
    return value;
}

static inline void store8(float *to, f32x8 value) { __builtin_memcpy(to, &value, sizeof value); }

/* The sum of the eight lanes, first to last. */
static inline float lanes8(f32x8 v) {
    float total = 0.0f;
    for (int t = 0; t < 8; t++)
        total += v[t];
    return total;
}

/* sum_k a[k] b[k], k < n, in a fixed order (eight lanes, then the lanes, then the tail):
 * GCC keeps a float sum in program order, so it would not vectorise a plain loop. */
static inline float dot8(const float *a, const float *b, int64_t n) {
    f32x8 sums = {0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        sums += load8(a + k) * load8(b + k);
    float total = lanes8(sums);
    for (; k < n; k++)
        total += a[k] * b[k];
    return total;
}

/* sum_k a[k], k < n, in dot8's order. */
static inline float sum8(const float *a, int64_t n) {
    f32x8 sums = {0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        sums += load8(a + k);
    float total = lanes8(sums);
    for (; k < n; k++)
        total += a[k];
    return total;
}

/* A synthesis layer as a product: weight [n_out][n_in] (a k x k layer's inputs in channel,
 * row, column order), bias in activation units plus the rounding half. */
typedef struct {
    const double *weight, *bias;
    int n_in, n_out, relu, residual;
} DenseLayer;

/* Both return -1 when their scratch memory cannot be allocated. */
int pointwise_run(const DenseLayer *layers, int n_layers, const double *x, int n_in, double *y, int64_t n,
                  int accumulate);
int spatial_layer(const DenseLayer *layer, int kernel, const double *x, int channels, int64_t height, int64_t width,
                  double *y);
/* How a filter pads its inputs: with the nearest one (replicate) or with zeros. */
enum { PAD_EDGE = 0, PAD_ZERO = 1 };
void filter_rows(const double *x, int64_t planes, int64_t in_rows, int64_t width, const double *taps, int n_taps,
                 int phases, int64_t out_rows, int64_t offset, int mode, double *y);
int filter_columns(const double *x, int64_t lines, int64_t in_width, const double *taps, int n_taps, int phases,
                   int64_t out_width, int64_t offset, int mode, double *y);
void warp(const double *samples, int channels, int64_t height, int64_t width, const int64_t *base_flow,
          const double *motion, const int64_t *table, int n_taps, double *out, int64_t *flows_out);
void image_samples(const double *x, int channels, int64_t n, const double *low, const double *span,
                   double max_value, double *out);
void blend(const double *first, const double *second, const double *beta, const double *residue, int64_t n,
           double max_value, double *out);

/* The ARM of a training step (armtrain.c), float32: each layer's weight [out][in] (the
 * hidden ones without their residual identity) and bias. */
typedef struct {
    const float *weight, *bias;
    int n_in;
} TrainLayer;

/* Latents [start, end) whose IFCE features come from IFCE layer `layer` (-1: features 0),
 * their inputs' flat positions [n_in][end - start]. */
typedef struct {
    int64_t start, end;
    int layer;
    const int64_t *inputs;
} TrainSegment;

typedef struct {
    int width, n_spatial, n_hidden, has_stabiliser, n_ifce, n_segments;
    int64_t n_latents, n_parameters;
    TrainLayer hidden[MAX_TRAIN_HIDDEN], output, stabiliser, ifce[MAX_IFCE_LAYERS];
    TrainSegment segments[MAX_TRAIN_SEGMENTS]; /* covering [0, n_latents) in order */
} TrainArm;

/* The upsampling of a training step (upsampling.c): the synthesis grids, finest first, at
 * `starts` in the flat float32 latents (n_latents of them), those before first_used empty;
 * the polyphase filters [n_grids - 1][2][phase_taps] (output 2i + p reads inputs i +
 * phase_offset ...), the refine filters [n_grids - 1][refine_taps]. */
typedef struct {
    int n_grids, first_used, phase_taps, refine_taps;
    int64_t phase_offset, n_latents;
    int64_t channels[MAX_GRIDS], heights[MAX_GRIDS], widths[MAX_GRIDS], starts[MAX_GRIDS];
    const float *phases, *refine;
} TrainUpsampling;

/* out [channels of the used grids][H][W] (the finest used grid's size); both return -1 when
 * out of memory. */
int upsampling_train_forward(const TrainUpsampling *up, const float *latents, float *out);
int upsampling_train_backward(const TrainUpsampling *up, const float *latents, const float *grad_out,
                              float *grad_latents, float *grad_phases, float *grad_refine);

/* A k x k synthesis layer of a training step (convtrain.c): weight [out][in][k][k], bias
 * [out], on [in][height][width] inputs, replicate-padded. */
typedef struct {
    int in_channels, out_channels, kernel;
    int64_t height, width;
    const float *weight, *bias;
} TrainConv;

/* y [out][height][width]; the backward writes grad_x, grad_weight and grad_bias. Both
 * return -1 when out of memory. */
int conv_train_forward(const TrainConv *conv, const float *x, float *y);
int conv_train_backward(const TrainConv *conv, const float *x, const float *grad_y, float *grad_x,
                        float *grad_weight, float *grad_bias);

/* raw [2][n_latents] (mu, log-scale before its shift) of the latents `padded` holds (then a
 * zero), their spatial contexts at the flat positions spatial [n_spatial][n_latents]. Both
 * return -1 when out of memory, -2 when a context or IFCE input lies outside the latents. */
int arm_train_forward(const TrainArm *arm, const float *padded, const int64_t *spatial, float *raw);
int arm_train_backward(const TrainArm *arm, const float *padded, const int64_t *spatial, const float *grad_raw,
                       float *grad_padded, float *grads);

#endif
