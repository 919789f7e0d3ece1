/* coolchic_pl._native: the Python face of the compiled decoder.
 *
 * Arrays arrive through the buffer protocol (NumPy arrays, bytes) with the element types
 * the Python callers guarantee (coolchic_pl.bitstream.native); their lengths are checked
 * here, so a wrong call is a ValueError rather than a read out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "native.h"

#define MAX_BUFFERS 96

typedef struct {
    Py_buffer views[MAX_BUFFERS];
    int count;
} Buffers;

static void release(Buffers *held) {
    for (int i = 0; i < held->count; i++)
        PyBuffer_Release(&held->views[i]);
    held->count = 0;
}

/* A contiguous view of `object` holding `expected` items of `itemsize` bytes (any count
 * when expected < 0); NULL with an exception set otherwise. */
static const void *view(Buffers *held, PyObject *object, Py_ssize_t itemsize, Py_ssize_t expected, int writable,
                        Py_ssize_t *count, const char *what) {
    Py_buffer *buffer = &held->views[held->count];
    if (held->count == MAX_BUFFERS) {
        PyErr_SetString(PyExc_RuntimeError, "too many buffers");
        return NULL;
    }
    if (PyObject_GetBuffer(object, buffer, writable ? PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS : PyBUF_C_CONTIGUOUS))
        return NULL;
    held->count++;
    if (buffer->len % itemsize || (expected >= 0 && buffer->len / itemsize != expected)) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes where %zd items of %zd bytes were expected", what, buffer->len,
                     expected, itemsize);
        return NULL;
    }
    if (count)
        *count = buffer->len / itemsize;
    return buffer->buf;
}

static int parse_arm(Buffers *held, PyObject *spec, ArmTables *arm) {
    PyObject *fh, *fhb, *fo, *fob, *fs, *fsb, *eh, *ehb, *eo, *eob, *es, *esb;
    if (!PyArg_ParseTuple(spec, "iidOOOOOOOOOOOO", &arm->width, &arm->n_hidden, &arm->fast_limit, &fh, &fhb, &fo,
                          &fob, &fs, &fsb, &eh, &ehb, &eo, &eob, &es, &esb))
        return -1;
    const Py_ssize_t d = arm->width, layers = arm->n_hidden;
    if (d < 1 || d > MAX_ARM_WIDTH || layers < 0 || !(arm->fast_limit >= 0.0 && arm->fast_limit <= 0x1p53)) {
        PyErr_SetString(PyExc_ValueError, "ARM width, depth or exact range out of range");
        return -1;
    }
    Py_ssize_t n_stabiliser;
    if (!(arm->fast_hidden = view(held, fh, 8, layers * d * d, 0, NULL, "fast hidden"))
        || !(arm->fast_hidden_bias = view(held, fhb, 8, layers * d, 0, NULL, "fast hidden bias"))
        || !(arm->fast_output = view(held, fo, 8, 2 * d, 0, NULL, "fast output"))
        || !(arm->fast_output_bias = view(held, fob, 8, 2, 0, NULL, "fast output bias"))
        || !(arm->fast_stabiliser = view(held, fs, 8, -1, 0, &n_stabiliser, "fast stabiliser"))
        || !(arm->fast_stabiliser_bias = view(held, fsb, 8, n_stabiliser ? 2 : 0, 0, NULL, "fast stabiliser bias"))
        || !(arm->exact_hidden = view(held, eh, 8, layers * d * d, 0, NULL, "hidden"))
        || !(arm->exact_hidden_bias = view(held, ehb, 8, layers * d, 0, NULL, "hidden bias"))
        || !(arm->exact_output = view(held, eo, 8, 2 * d, 0, NULL, "output"))
        || !(arm->exact_output_bias = view(held, eob, 8, 2, 0, NULL, "output bias"))
        || !(arm->exact_stabiliser = view(held, es, 8, n_stabiliser, 0, NULL, "stabiliser"))
        || !(arm->exact_stabiliser_bias = view(held, esb, 8, n_stabiliser ? 2 : 0, 0, NULL, "stabiliser bias")))
        return -1;
    if (n_stabiliser && n_stabiliser != 2 * d) {
        PyErr_SetString(PyExc_ValueError, "stabiliser shape");
        return -1;
    }
    if (!n_stabiliser) {
        arm->fast_stabiliser = arm->fast_stabiliser_bias = NULL;
        arm->exact_stabiliser = arm->exact_stabiliser_bias = NULL;
    }
    return 0;
}

static int parse_rows(PyObject *spec, RowConstants *rows) {
    long long low, high, scale_bias;
    if (!PyArg_ParseTuple(spec, "LLLiiiii", &low, &high, &scale_bias, &rows->bin_bits, &rows->n_scales,
                          &rows->n_rows, &rows->residual_range, &rows->alphabet))
        return -1;
    rows->low = low, rows->high = high, rows->scale_bias = scale_bias;
    return 0;
}

PyDoc_STRVAR(decode_grid_doc,
             "decode_grid(words, state, bits, bit_pos, out, height, width, slope, offsets, ifce, cdf, arm, rows) "
             "-> (state, bit_pos)\n\n"
             "Decode one latent grid into the int64 [height, width] `out`, front by front (front f holds "
             "(y, f - slope * y)); `offsets` are the ARM contexts' (dy, dx), int64; `ifce` is None or "
             "(n_features, weight, bias, flat, sources). `state` is the range decoder's (word position, lower, "
             "range, point), `bit_pos` the escape reader's. A damaged stream raises ValueError with the reason.");

/* The IFCE tuple (n_features, weight, bias, flat, sources), every source position checked
 * against `flat` for a height x width grid. */
static int parse_ifce(Buffers *held, PyObject *spec, GridInputs *in, int n_features) {
    PyObject *weight, *bias, *flat, *sources;
    int declared;
    if (!PyArg_ParseTuple(spec, "iOOOO!", &declared, &weight, &bias, &flat, &PyTuple_Type, &sources))
        return -1;
    Py_ssize_t n_flat;
    const Py_ssize_t n_sources = PyTuple_GET_SIZE(sources);
    if (declared != n_features || n_sources > MAX_IFCE_SOURCES) {
        PyErr_SetString(PyExc_ValueError, "inconsistent IFCE arguments");
        return -1;
    }
    in->n_sources = (int)n_sources;
    if (!(in->ifce_weight = view(held, weight, 8, n_features * n_sources, 0, NULL, "IFCE weight"))
        || !(in->ifce_bias = view(held, bias, 8, n_sources ? n_features : 0, 0, NULL, "IFCE bias"))
        || !(in->flat = view(held, flat, 8, -1, 0, &n_flat, "flat latents")))
        return -1;
    for (Py_ssize_t s = 0; s < n_sources; s++) {
        long long start, source_width;
        int shift;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(sources, s), "LLi", &start, &source_width, &shift))
            return -1;
        if (start < 0 || source_width < 1 || shift < 0 || shift > 30
            || start + ((in->height - 1) >> shift) * source_width + ((in->width - 1) >> shift) >= n_flat
            || ((in->width - 1) >> shift) >= source_width) {
            PyErr_SetString(PyExc_ValueError, "an IFCE source outside the latents");
            return -1;
        }
        in->source_start[s] = start, in->source_width[s] = source_width, in->source_shift[s] = shift;
    }
    return 0;
}

/* The contexts' offsets (dy, dx) into the border and the deltas of `in`: each above the
 * current row or to its left, in an earlier front (dx + slope * dy < 0). */
static int place_contexts(const int64_t *offsets, int n_contexts, GridInputs *in) {
    int64_t top = 0, left = 0, right = 0;
    for (int i = 0; i < n_contexts; i++) {
        const int64_t dy = offsets[2 * i], dx = offsets[2 * i + 1];
        if (dy > 0 || dy < -MAX_ARM_WIDTH || dx < -MAX_ARM_WIDTH || dx > MAX_ARM_WIDTH || dx + in->slope * dy >= 0) {
            PyErr_SetString(PyExc_ValueError, "a context that is not decoded before its latent");
            return -1;
        }
        top = -dy > top ? -dy : top;
        left = -dx > left ? -dx : left;
        right = dx > right ? dx : right;
    }
    in->top = top, in->left = left, in->padded_width = in->width + left + right;
    for (int i = 0; i < n_contexts; i++)
        in->deltas[i] = offsets[2 * i] * in->padded_width + offsets[2 * i + 1];
    return 0;
}

static PyObject *py_decode_grid(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *words, *bits, *out, *offsets, *ifce, *cdf, *arm_spec, *rows_spec;
    long long word_pos, bit_pos, height, width, slope;
    unsigned long long lower, range, point;
    if (!PyArg_ParseTuple(args, "O(LKKK)OLOLLLOOOOO", &words, &word_pos, &lower, &range, &point, &bits, &bit_pos,
                          &out, &height, &width, &slope, &offsets, &ifce, &cdf, &arm_spec, &rows_spec))
        return NULL;
    Buffers held = {.count = 0};
    ArmTables arm;
    RowConstants rows;
    GridInputs in = {.arm = &arm, .rows = &rows, .error = NULL};
    Py_ssize_t n_words, n_bits, n_offsets, n_cdf;
    int64_t *decoded;
    const int64_t *context_offsets;
    if (height < 1 || width < 1 || height > (1 << 20) || width > (1 << 20) || slope < 1 || slope > MAX_ARM_WIDTH) {
        PyErr_SetString(PyExc_ValueError, "grid size or wavefront slope out of range");
        return NULL;
    }
    in.height = height, in.width = width, in.slope = slope;
    if (parse_arm(&held, arm_spec, &arm) || parse_rows(rows_spec, &rows))
        goto error;
    if (!(in.words = view(&held, words, 4, -1, 0, &n_words, "words"))
        || !(in.bits = view(&held, bits, 1, -1, 0, &n_bits, "bits"))
        || !(decoded = (int64_t *)view(&held, out, 8, height * width, 1, NULL, "out"))
        || !(context_offsets = view(&held, offsets, 8, -1, 0, &n_offsets, "offsets"))
        || !(in.cdf = view(&held, cdf, 4, -1, 0, &n_cdf, "cdf")))
        goto error;
    in.n_contexts = (int)(n_offsets / 2);
    if (n_offsets % 2 || in.n_contexts > arm.width || place_contexts(context_offsets, in.n_contexts, &in))
        goto error_set;
    if (arm.width > in.n_contexts && (ifce == Py_None || parse_ifce(&held, ifce, &in, arm.width - in.n_contexts)))
        goto ifce_error;
    if (n_cdf != (Py_ssize_t)rows.n_rows * (rows.alphabet + 1) || word_pos < 0 || word_pos > n_words || bit_pos < 0
        || bit_pos > n_bits) {
        PyErr_SetString(PyExc_ValueError, "inconsistent decode_grid arguments");
        goto error;
    }
    in.n_words = n_words, in.n_bits = n_bits, in.bit_pos = bit_pos;
    in.range = (RangeState){.lower = lower, .range = range, .point = point, .word_pos = word_pos};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = decode_grid(&in, decoded);
    Py_END_ALLOW_THREADS
    release(&held);
    if (status) {
        PyErr_SetString(PyExc_ValueError, in.error);
        return NULL;
    }
    return Py_BuildValue("(LKKK)L", (long long)in.range.word_pos, (unsigned long long)in.range.lower,
                         (unsigned long long)in.range.range, (unsigned long long)in.range.point,
                         (long long)in.bit_pos);
error_set:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "more contexts than ARM inputs");
    goto error;
ifce_error:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "an ARM with IFCE inputs needs the IFCE tuple");
error:
    release(&held);
    return NULL;
}

/* A layer tuple (weight, bias, n_in, n_out, residual, relu) into `layer`. */
static int parse_layer(Buffers *held, PyObject *spec, DenseLayer *layer) {
    PyObject *weight, *bias;
    if (!PyArg_ParseTuple(spec, "OOiiii", &weight, &bias, &layer->n_in, &layer->n_out, &layer->residual,
                          &layer->relu))
        return -1;
    if (layer->n_in < 1 || layer->n_out < 1 || layer->n_in > MAX_CHANNELS * 64 || layer->n_out > MAX_CHANNELS
        || (layer->residual && layer->n_in % layer->n_out)) {
        PyErr_SetString(PyExc_ValueError, "layer shape out of range");
        return -1;
    }
    if (!(layer->weight = view(held, weight, 8, (Py_ssize_t)layer->n_in * layer->n_out, 0, NULL, "weight"))
        || !(layer->bias = view(held, bias, 8, layer->n_out, 0, NULL, "bias")))
        return -1;
    return 0;
}

PyDoc_STRVAR(pointwise_run_doc, "pointwise_run(x, n_in, n, layers, y, accumulate)\n\n"
                                "A run of 1x1 layers on float64 [n_in, n] into [n_out, n], or with `accumulate` "
                                "added to it, clamped.");

static PyObject *py_pointwise_run(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x, *layer_specs, *y;
    int n_in, accumulate;
    long long n;
    if (!PyArg_ParseTuple(args, "OiLO!Op", &x, &n_in, &n, &PyList_Type, &layer_specs, &y, &accumulate))
        return NULL;
    Buffers held = {.count = 0};
    DenseLayer layers[MAX_LAYERS];
    const Py_ssize_t n_layers = PyList_GET_SIZE(layer_specs);
    if (n_layers < 1 || n_layers > MAX_LAYERS || n_in < 1 || n < 0) {
        PyErr_SetString(PyExc_ValueError, "layer count or input shape out of range");
        return NULL;
    }
    int channels = n_in;
    for (Py_ssize_t l = 0; l < n_layers; l++) {
        if (parse_layer(&held, PyList_GET_ITEM(layer_specs, l), &layers[l]))
            goto error;
        if (layers[l].n_in != channels || (layers[l].residual && layers[l].n_in != layers[l].n_out)) {
            PyErr_SetString(PyExc_ValueError, "layer shapes do not chain");
            goto error;
        }
        channels = layers[l].n_out;
    }
    const double *in;
    double *out;
    if (!(in = view(&held, x, 8, (Py_ssize_t)n_in * n, 0, NULL, "x"))
        || !(out = (double *)view(&held, y, 8, (Py_ssize_t)channels * n, 1, NULL, "y")))
        goto error;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = pointwise_run(layers, (int)n_layers, in, n_in, out, n, accumulate);
    Py_END_ALLOW_THREADS
    release(&held);
    return status ? PyErr_NoMemory() : Py_NewRef(Py_None);
error:
    release(&held);
    return NULL;
}

PyDoc_STRVAR(spatial_layer_doc, "spatial_layer(x, channels, height, width, layer, kernel, y)\n\n"
                                "A k x k layer (replicate padding) on float64 [channels, height, width].");

static PyObject *py_spatial_layer(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x, *spec, *y;
    int channels, kernel;
    long long height, width;
    if (!PyArg_ParseTuple(args, "OiLLOiO", &x, &channels, &height, &width, &spec, &kernel, &y))
        return NULL;
    Buffers held = {.count = 0};
    DenseLayer layer;
    const double *in;
    double *out;
    if (parse_layer(&held, spec, &layer))
        goto error;
    if (kernel < 1 || kernel % 2 == 0 || channels < 1 || height < 1 || width < 1
        || layer.n_in != channels * kernel * kernel || (layer.residual && layer.n_out != channels)) {
        PyErr_SetString(PyExc_ValueError, "spatial layer shape");
        goto error;
    }
    if (!(in = view(&held, x, 8, (Py_ssize_t)(channels * height * width), 0, NULL, "x"))
        || !(out = (double *)view(&held, y, 8, (Py_ssize_t)(layer.n_out * height * width), 1, NULL, "y")))
        goto error;
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = spatial_layer(&layer, kernel, in, channels, height, width, out);
    Py_END_ALLOW_THREADS
    release(&held);
    return status ? PyErr_NoMemory() : Py_NewRef(Py_None);
error:
    release(&held);
    return NULL;
}

PyDoc_STRVAR(filter_doc, "filter_1d(x, outer, in_length, inner, taps, n_taps, phases, out_length, offset, zero, y)\n\n"
                         "1-D filter of float64 activations [outer, in_length, inner] along their middle "
                         "dimension into [outer, out_length, inner]: output o = phases * i + p is "
                         "floor(1/2 + sum_t taps[p][t] x[i + t + offset]) clamped, the inputs outside x "
                         "replicating the nearest one (zero false) or 0 (zero true); with two phases, a 2x "
                         "upsampling whose phases interleave.");

static PyObject *py_filter_1d(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x, *taps, *y;
    long long outer, in_length, inner, out_length, offset;
    int n_taps, phases, zero;
    if (!PyArg_ParseTuple(args, "OLLLOiiLLpO", &x, &outer, &in_length, &inner, &taps, &n_taps, &phases, &out_length,
                          &offset, &zero, &y))
        return NULL;
    Buffers held = {.count = 0};
    const double *in, *tap_values;
    double *out;
    if (outer < 0 || in_length < 1 || inner < 1 || n_taps < 1 || phases < 1 || phases > MAX_FILTER_PHASES
        || out_length < 0 || offset < -(1LL << 40) || offset > (1LL << 40)) {
        PyErr_SetString(PyExc_ValueError, "filter shape");
        return NULL;
    }
    if (!(in = view(&held, x, 8, (Py_ssize_t)(outer * in_length * inner), 0, NULL, "x"))
        || !(tap_values = view(&held, taps, 8, (Py_ssize_t)n_taps * phases, 0, NULL, "taps"))
        || !(out = (double *)view(&held, y, 8, (Py_ssize_t)(outer * out_length * inner), 1, NULL, "y"))) {
        release(&held);
        return NULL;
    }
    const int mode = zero ? PAD_ZERO : PAD_EDGE;
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    if (inner == 1)
        status = filter_columns(in, outer, in_length, tap_values, n_taps, phases, out_length, offset, mode, out);
    else
        filter_rows(in, outer, in_length, inner, tap_values, n_taps, phases, out_length, offset, mode, out);
    Py_END_ALLOW_THREADS
    release(&held);
    if (status)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(warp_doc, "warp(samples, channels, height, width, base_flow, motion, table, n_taps, out, flows)\n\n"
                       "Backward warp of float64 integer samples [channels, height, width] by int64 flows "
                       "[2, height, width] in 1/64 pel with the int64 tap table [64, n_taps]: the base flows, "
                       "plus the float64 motion output [2, height, width] in 2^-16 units (or None) rounded to "
                       "1/64 pel; the flows used are written to the int64 `flows`.");

/* An optional float64 array of `expected` items: NULL for None. */
static int optional_doubles(Buffers *held, PyObject *object, Py_ssize_t expected, const char *what,
                            const double **values) {
    *values = NULL;
    if (object == Py_None)
        return 0;
    return (*values = view(held, object, 8, expected, 0, NULL, what)) ? 0 : -1;
}

static PyObject *py_warp(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *samples, *flow, *motion_object, *table, *out, *flows_object;
    int channels, n_taps;
    long long height, width;
    if (!PyArg_ParseTuple(args, "OiLLOOOiOO", &samples, &channels, &height, &width, &flow, &motion_object, &table,
                          &n_taps, &out, &flows_object))
        return NULL;
    if (channels < 1 || height < 1 || width < 1 || n_taps < 1 || n_taps > MAX_WARP_TAPS) {
        PyErr_SetString(PyExc_ValueError, "warp shape");
        return NULL;
    }
    Buffers held = {.count = 0};
    const double *in, *motion;
    const int64_t *flows, *taps;
    double *result;
    int64_t *flows_out;
    const Py_ssize_t plane = (Py_ssize_t)(height * width);
    if (!(in = view(&held, samples, 8, channels * plane, 0, NULL, "samples"))
        || !(flows = view(&held, flow, 8, 2 * plane, 0, NULL, "flow"))
        || optional_doubles(&held, motion_object, 2 * plane, "motion", &motion)
        || !(taps = view(&held, table, 8, (Py_ssize_t)WARP_POSITIONS * n_taps, 0, NULL, "table"))
        || !(result = (double *)view(&held, out, 8, channels * plane, 1, NULL, "out"))
        || !(flows_out = (int64_t *)view(&held, flows_object, 8, 2 * plane, 1, NULL, "flows"))) {
        release(&held);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    warp(in, channels, height, width, flows, motion, taps, n_taps, result, flows_out);
    Py_END_ALLOW_THREADS
    release(&held);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(blend_doc, "blend(first, second, beta, residue, n, max_value, out)\n\n"
                        "The samples [3, n] of an inter frame from its float64 predictions [3, n] (`second` None "
                        "for one reference), the motion's beta output [n] (or None: one half) and the residue "
                        "output [4, n] (or None), as fixedpoint.samples.inter_samples defines them.");

static PyObject *py_blend(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *first_object, *second_object, *beta_object, *residue_object, *out_object;
    long long n;
    double max_value;
    if (!PyArg_ParseTuple(args, "OOOOLdO", &first_object, &second_object, &beta_object, &residue_object, &n,
                          &max_value, &out_object))
        return NULL;
    if (n < 0 || max_value < 1 || max_value > 65535) {
        PyErr_SetString(PyExc_ValueError, "blend shape");
        return NULL;
    }
    Buffers held = {.count = 0};
    const double *first, *second, *beta, *residue;
    double *out;
    if (!(first = view(&held, first_object, 8, 3 * (Py_ssize_t)n, 0, NULL, "first"))
        || optional_doubles(&held, second_object, 3 * (Py_ssize_t)n, "second", &second)
        || optional_doubles(&held, beta_object, (Py_ssize_t)n, "beta", &beta)
        || optional_doubles(&held, residue_object, 4 * (Py_ssize_t)n, "residue", &residue)
        || !(out = (double *)view(&held, out_object, 8, 3 * (Py_ssize_t)n, 1, NULL, "out"))) {
        release(&held);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    blend(first, second, beta, residue, n, max_value, out);
    Py_END_ALLOW_THREADS
    release(&held);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(image_samples_doc, "image_samples(x, channels, n, low, span, max_value, out)\n\n"
                                "An image's integer samples (float64 [channels, n]) from its synthesis output x "
                                "in activation units and each channel's output range low, span (float64).");

static PyObject *py_image_samples(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x_object, *low_object, *span_object, *out_object;
    int channels;
    long long n;
    double max_value;
    if (!PyArg_ParseTuple(args, "OiLOOdO", &x_object, &channels, &n, &low_object, &span_object, &max_value,
                          &out_object))
        return NULL;
    if (channels < 1 || channels > MAX_CHANNELS || n < 0 || max_value < 1 || max_value > 65535) {
        PyErr_SetString(PyExc_ValueError, "image samples shape");
        return NULL;
    }
    Buffers held = {.count = 0};
    const double *x, *low, *span;
    double *out;
    if (!(x = view(&held, x_object, 8, channels * (Py_ssize_t)n, 0, NULL, "x"))
        || !(low = view(&held, low_object, 8, channels, 0, NULL, "low"))
        || !(span = view(&held, span_object, 8, channels, 0, NULL, "span"))
        || !(out = (double *)view(&held, out_object, 8, channels * (Py_ssize_t)n, 1, NULL, "out"))) {
        release(&held);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    image_samples(x, channels, n, low, span, max_value, out);
    Py_END_ALLOW_THREADS
    release(&held);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(read_signed_doc, "read_signed(bits, bit_pos, count, order, values) -> bit_pos\n\n"
                              "`count` signed exp-Golomb values into the int64 `values` from the bits (one per "
                              "byte) at `bit_pos`; a stream too short or damaged raises ValueError.");

static PyObject *py_read_signed(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *bits, *values;
    long long bit_pos, count;
    int order;
    if (!PyArg_ParseTuple(args, "OLLiO", &bits, &bit_pos, &count, &order, &values))
        return NULL;
    Buffers held = {.count = 0};
    GridInputs in = {.error = NULL};
    Py_ssize_t n_bits;
    int64_t *out;
    if (!(in.bits = view(&held, bits, 1, -1, 0, &n_bits, "bits"))
        || !(out = (int64_t *)view(&held, values, 8, (Py_ssize_t)count, 1, NULL, "values"))) {
        release(&held);
        return NULL;
    }
    if (bit_pos < 0 || bit_pos > n_bits || order < 0 || order > 32) {
        release(&held);
        PyErr_SetString(PyExc_ValueError, "inconsistent read_signed arguments");
        return NULL;
    }
    in.n_bits = n_bits, in.bit_pos = bit_pos;
    const int status = read_signed(&in, count, order, out);
    release(&held);
    if (status) {
        PyErr_SetString(PyExc_ValueError, in.error);
        return NULL;
    }
    return PyLong_FromLongLong(in.bit_pos);
}

/* float32 arrays of n_out x n_in weights and n_out biases. */
static int view_train_layer(Buffers *held, PyObject *weight, PyObject *bias, int n_in, int n_out, TrainLayer *layer) {
    layer->n_in = n_in;
    return !(layer->weight = view(held, weight, 4, (Py_ssize_t)n_in * n_out, 0, NULL, "ARM weight"))
           || !(layer->bias = view(held, bias, 4, n_out, 0, NULL, "ARM bias"));
}

/* A (weight, bias) tuple, as view_train_layer takes them. */
static int parse_train_layer(Buffers *held, PyObject *spec, int n_in, int n_out, TrainLayer *layer) {
    PyObject *weight, *bias;
    if (!PyArg_ParseTuple(spec, "OO", &weight, &bias))
        return -1;
    return view_train_layer(held, weight, bias, n_in, n_out, layer);
}

/* The tuple (width, n_latents, hidden, output, stabiliser, ifce, segments) of
 * coolchic_pl.model.armrate into `arm`, with the padded latents and the spatial index. */
static int parse_train_arm(Buffers *held, PyObject *spec, PyObject *padded_object, PyObject *spatial_object,
                           TrainArm *arm, const float **padded, const int64_t **spatial) {
    PyObject *hidden, *output, *stabiliser, *ifce, *segments;
    long long n_latents;
    if (!PyArg_ParseTuple(spec, "iLO!OOO!O!", &arm->width, &n_latents, &PyTuple_Type, &hidden, &output, &stabiliser,
                          &PyTuple_Type, &ifce, &PyTuple_Type, &segments))
        return -1;
    const int width = arm->width;
    Py_ssize_t n_spatial_values;
    arm->n_latents = n_latents;
    arm->n_hidden = (int)PyTuple_GET_SIZE(hidden);
    arm->n_ifce = (int)PyTuple_GET_SIZE(ifce);
    arm->n_segments = (int)PyTuple_GET_SIZE(segments);
    arm->has_stabiliser = stabiliser != Py_None;
    if (width < 1 || width > MAX_ARM_WIDTH || n_latents < 1 || arm->n_hidden > MAX_TRAIN_HIDDEN
        || arm->n_ifce > MAX_IFCE_LAYERS || arm->n_segments < 1 || arm->n_segments > MAX_TRAIN_SEGMENTS) {
        PyErr_SetString(PyExc_ValueError, "ARM shape out of range");
        return -1;
    }
    if (!(*padded = view(held, padded_object, 4, n_latents + 1, 0, NULL, "padded latents"))
        || !(*spatial = view(held, spatial_object, 8, -1, 0, &n_spatial_values, "spatial index")))
        return -1;
    arm->n_spatial = (int)(n_spatial_values / n_latents);
    if (n_spatial_values % n_latents || arm->n_spatial > width) {
        PyErr_SetString(PyExc_ValueError, "a spatial context index that is not [n_spatial, n_latents]");
        return -1;
    }
    const int n_features = width - arm->n_spatial;
    int64_t parameters = 0;
    for (int l = 0; l < arm->n_hidden; l++, parameters += width * width + width)
        if (parse_train_layer(held, PyTuple_GET_ITEM(hidden, l), width, width, &arm->hidden[l]))
            return -1;
    if (parse_train_layer(held, output, width, 2, &arm->output)
        || (arm->has_stabiliser && parse_train_layer(held, stabiliser, width, 2, &arm->stabiliser)))
        return -1;
    parameters += (2 * width + 2) * (1 + arm->has_stabiliser);
    for (int l = 0; l < arm->n_ifce; l++) {
        PyObject *weight, *bias;
        int n_in;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(ifce, l), "OOi", &weight, &bias, &n_in))
            return -1;
        if (n_in < 1 || n_in > MAX_IFCE_INPUTS) {
            PyErr_SetString(PyExc_ValueError, "IFCE input count out of range");
            return -1;
        }
        if (view_train_layer(held, weight, bias, n_in, n_features, &arm->ifce[l]))
            return -1;
        parameters += (int64_t)n_in * n_features + n_features;
    }
    arm->n_parameters = parameters;
    int64_t covered = 0;
    for (int s = 0; s < arm->n_segments; s++) {
        TrainSegment *segment = &arm->segments[s];
        PyObject *inputs;
        long long start, end;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(segments, s), "LLiO", &start, &end, &segment->layer, &inputs))
            return -1;
        segment->start = start, segment->end = end;
        if (start != covered || end <= start || end > n_latents || segment->layer < -1
            || segment->layer >= arm->n_ifce || (segment->layer >= 0) != (inputs != Py_None)) {
            PyErr_SetString(PyExc_ValueError, "ARM segments that do not cover the latents in order");
            return -1;
        }
        covered = end;
        if (segment->layer >= 0) {
            const Py_ssize_t count = (Py_ssize_t)arm->ifce[segment->layer].n_in * (end - start);
            if (!(segment->inputs = view(held, inputs, 8, count, 0, NULL, "IFCE inputs")))
                return -1;
        }
    }
    if (covered != n_latents) {
        PyErr_SetString(PyExc_ValueError, "ARM segments that do not cover the latents in order");
        return -1;
    }
    return 0;
}

/* None, or the exception an arm_train_* status stands for. */
static PyObject *train_status(int status) {
    if (status == -1)
        return PyErr_NoMemory();
    if (status) {
        PyErr_SetString(PyExc_ValueError, "a context or IFCE input outside the latents");
        return NULL;
    }
    return Py_NewRef(Py_None);
}

PyDoc_STRVAR(arm_train_forward_doc, "arm_train_forward(padded, spatial, arm, raw)\n\n"
                                    "The training ARM's raw outputs (float32 [2, n]) of the float32 latents "
                                    "`padded` (n, then a zero); see coolchic_pl.model.armrate.");

static PyObject *py_arm_train_forward(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *padded_object, *spatial_object, *spec, *raw_object;
    if (!PyArg_ParseTuple(args, "OOO!O", &padded_object, &spatial_object, &PyTuple_Type, &spec, &raw_object))
        return NULL;
    Buffers held = {.count = 0};
    TrainArm arm;
    const float *padded;
    const int64_t *spatial;
    float *raw;
    if (parse_train_arm(&held, spec, padded_object, spatial_object, &arm, &padded, &spatial)
        || !(raw = (float *)view(&held, raw_object, 4, 2 * arm.n_latents, 1, NULL, "raw"))) {
        release(&held);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = arm_train_forward(&arm, padded, spatial, raw);
    Py_END_ALLOW_THREADS
    release(&held);
    return train_status(status);
}

PyDoc_STRVAR(arm_train_backward_doc, "arm_train_backward(padded, spatial, arm, grad_raw, grad_padded, grads)\n\n"
                                     "Adds the latents' gradients through the ARM to `grad_padded` and writes the "
                                     "parameters' gradients, flat in layer order, to `grads` (float32).");

static PyObject *py_arm_train_backward(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *padded_object, *spatial_object, *spec, *grad_raw_object, *grad_padded_object, *grads_object;
    if (!PyArg_ParseTuple(args, "OOO!OOO", &padded_object, &spatial_object, &PyTuple_Type, &spec, &grad_raw_object,
                          &grad_padded_object, &grads_object))
        return NULL;
    Buffers held = {.count = 0};
    TrainArm arm;
    const float *padded, *grad_raw;
    const int64_t *spatial;
    float *grad_padded, *grads;
    if (parse_train_arm(&held, spec, padded_object, spatial_object, &arm, &padded, &spatial)
        || !(grad_raw = view(&held, grad_raw_object, 4, 2 * arm.n_latents, 0, NULL, "grad raw"))
        || !(grad_padded = (float *)view(&held, grad_padded_object, 4, arm.n_latents + 1, 1, NULL, "grad padded"))
        || !(grads = (float *)view(&held, grads_object, 4, arm.n_parameters, 1, NULL, "grads"))) {
        release(&held);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = arm_train_backward(&arm, padded, spatial, grad_raw, grad_padded, grads);
    Py_END_ALLOW_THREADS
    release(&held);
    return train_status(status);
}

/* (grids ((channels, height, width), ...), first_used, phases, phase_taps, phase_offset,
 * refine, refine_taps) into `up`, for flat latents of n_latents values. */
static int parse_train_upsampling(Buffers *held, PyObject *spec, Py_ssize_t n_latents, TrainUpsampling *up) {
    PyObject *grids, *phases, *refine;
    long long offset;
    if (!PyArg_ParseTuple(spec, "O!iOiLOi", &PyTuple_Type, &grids, &up->first_used, &phases, &up->phase_taps, &offset,
                          &refine, &up->refine_taps))
        return -1;
    up->n_grids = (int)PyTuple_GET_SIZE(grids);
    up->phase_offset = offset, up->n_latents = n_latents;
    if (up->n_grids < 1 || up->n_grids > MAX_GRIDS || up->first_used < 0 || up->first_used >= up->n_grids
        || up->phase_taps < 1 || up->phase_taps > 64 || up->refine_taps < 1 || up->refine_taps > 63
        || up->refine_taps % 2 == 0 || offset < -64 || offset > 64) {
        PyErr_SetString(PyExc_ValueError, "upsampling shape out of range");
        return -1;
    }
    int64_t start = 0;
    for (int g = 0; g < up->n_grids; g++) {
        long long channels, height, width;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(grids, g), "LLL", &channels, &height, &width))
            return -1;
        if (channels < 0 || height < 1 || width < 1 || height > (1 << 20) || width > (1 << 20)
            || (g >= up->first_used) != (channels > 0)) {
            PyErr_SetString(PyExc_ValueError, "upsampling grid shape out of range");
            return -1;
        }
        up->channels[g] = channels, up->heights[g] = height, up->widths[g] = width, up->starts[g] = start;
        start += channels * height * width;
    }
    for (int g = up->first_used; g + 1 < up->n_grids; g++)
        if (up->heights[g + 1] * 2 < up->heights[g] || up->widths[g + 1] * 2 < up->widths[g]) {
            PyErr_SetString(PyExc_ValueError, "an upsampling grid more than twice its coarser one");
            return -1;
        }
    const Py_ssize_t levels = up->n_grids - 1;
    if (start != n_latents) {
        PyErr_SetString(PyExc_ValueError, "upsampling grids that do not fill the latents");
        return -1;
    }
    return !(up->phases = view(held, phases, 4, levels * 2 * up->phase_taps, 0, NULL, "phases"))
           || !(up->refine = view(held, refine, 4, levels * up->refine_taps, 0, NULL, "refine"));
}

static Py_ssize_t upsampled_size(const TrainUpsampling *up) {
    int64_t channels = 0;
    for (int g = up->first_used; g < up->n_grids; g++)
        channels += up->channels[g];
    return channels * up->heights[up->first_used] * up->widths[up->first_used];
}

PyDoc_STRVAR(upsampling_train_forward_doc, "upsampling_train_forward(latents, upsampling, out)\n\n"
                                           "The training upsampling of the float32 flat synthesis latents into "
                                           "`out`; see coolchic_pl.model.upsampling.");

static PyObject *py_upsampling_train_forward(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *latents_object, *spec, *out_object;
    if (!PyArg_ParseTuple(args, "OO!O", &latents_object, &PyTuple_Type, &spec, &out_object))
        return NULL;
    Buffers held = {.count = 0};
    TrainUpsampling up;
    Py_ssize_t n_latents;
    const float *latents;
    float *out;
    if (!(latents = view(&held, latents_object, 4, -1, 0, &n_latents, "latents"))
        || parse_train_upsampling(&held, spec, n_latents, &up)
        || !(out = (float *)view(&held, out_object, 4, upsampled_size(&up), 1, NULL, "out"))) {
        release(&held);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = upsampling_train_forward(&up, latents, out);
    Py_END_ALLOW_THREADS
    release(&held);
    return status ? PyErr_NoMemory() : Py_NewRef(Py_None);
}

PyDoc_STRVAR(upsampling_train_backward_doc,
             "upsampling_train_backward(latents, upsampling, grad_out, grad_latents, grad_phases, grad_refine)\n\n"
             "The gradients of the training upsampling (float32), written.");

static PyObject *py_upsampling_train_backward(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *latents_object, *spec, *grad_out_object, *grad_latents_object, *grad_phases_object, *grad_refine_object;
    if (!PyArg_ParseTuple(args, "OO!OOOO", &latents_object, &PyTuple_Type, &spec, &grad_out_object,
                          &grad_latents_object, &grad_phases_object, &grad_refine_object))
        return NULL;
    Buffers held = {.count = 0};
    TrainUpsampling up;
    Py_ssize_t n_latents;
    const float *latents, *grad_out;
    float *grad_latents, *grad_phases, *grad_refine;
    if (!(latents = view(&held, latents_object, 4, -1, 0, &n_latents, "latents"))
        || parse_train_upsampling(&held, spec, n_latents, &up)
        || !(grad_out = view(&held, grad_out_object, 4, upsampled_size(&up), 0, NULL, "grad out"))
        || !(grad_latents = (float *)view(&held, grad_latents_object, 4, n_latents, 1, NULL, "grad latents"))
        || !(grad_phases = (float *)view(&held, grad_phases_object, 4, (up.n_grids - 1) * 2 * (Py_ssize_t)up.phase_taps,
                                         1, NULL, "grad phases"))
        || !(grad_refine = (float *)view(&held, grad_refine_object, 4, (up.n_grids - 1) * (Py_ssize_t)up.refine_taps, 1,
                                         NULL, "grad refine"))) {
        release(&held);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = upsampling_train_backward(&up, latents, grad_out, grad_latents, grad_phases, grad_refine);
    Py_END_ALLOW_THREADS
    release(&held);
    return status ? PyErr_NoMemory() : Py_NewRef(Py_None);
}

/* (in_channels, out_channels, kernel, height, width, weight, bias) into `conv`. */
static int parse_train_conv(Buffers *held, PyObject *spec, TrainConv *conv) {
    PyObject *weight, *bias;
    long long height, width;
    if (!PyArg_ParseTuple(spec, "iiiLLOO", &conv->in_channels, &conv->out_channels, &conv->kernel, &height, &width,
                          &weight, &bias))
        return -1;
    conv->height = height, conv->width = width;
    if (conv->in_channels < 1 || conv->in_channels > MAX_CHANNELS || conv->out_channels < 1
        || conv->out_channels > MAX_CHANNELS || conv->kernel < 1 || conv->kernel > 63 || conv->kernel % 2 == 0
        || height < 1 || width < 1 || height > (1 << 20) || width > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "convolution shape out of range");
        return -1;
    }
    const Py_ssize_t n_weights = (Py_ssize_t)conv->out_channels * conv->in_channels * conv->kernel * conv->kernel;
    return !(conv->weight = view(held, weight, 4, n_weights, 0, NULL, "weight"))
           || !(conv->bias = view(held, bias, 4, conv->out_channels, 0, NULL, "bias"));
}

PyDoc_STRVAR(conv_train_forward_doc, "conv_train_forward(x, conv, y)\n\n"
                                     "A replicate-padded k x k layer of a training step on float32 [in, H, W].");

static PyObject *py_conv_train_forward(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x_object, *spec, *y_object;
    if (!PyArg_ParseTuple(args, "OO!O", &x_object, &PyTuple_Type, &spec, &y_object))
        return NULL;
    Buffers held = {.count = 0};
    TrainConv conv;
    const float *x;
    float *y;
    if (parse_train_conv(&held, spec, &conv)
        || !(x = view(&held, x_object, 4, conv.in_channels * conv.height * conv.width, 0, NULL, "x"))
        || !(y = (float *)view(&held, y_object, 4, conv.out_channels * conv.height * conv.width, 1, NULL, "y"))) {
        release(&held);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = conv_train_forward(&conv, x, y);
    Py_END_ALLOW_THREADS
    release(&held);
    return status ? PyErr_NoMemory() : Py_NewRef(Py_None);
}

PyDoc_STRVAR(conv_train_backward_doc, "conv_train_backward(x, conv, grad_y, grad_x, grad_weight, grad_bias)\n\n"
                                      "The gradients of conv_train_forward (float32), written.");

static PyObject *py_conv_train_backward(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *x_object, *spec, *grad_y_object, *grad_x_object, *grad_weight_object, *grad_bias_object;
    if (!PyArg_ParseTuple(args, "OO!OOOO", &x_object, &PyTuple_Type, &spec, &grad_y_object, &grad_x_object,
                          &grad_weight_object, &grad_bias_object))
        return NULL;
    Buffers held = {.count = 0};
    TrainConv conv;
    const float *x, *grad_y;
    float *grad_x, *grad_weight, *grad_bias;
    if (parse_train_conv(&held, spec, &conv)
        || !(x = view(&held, x_object, 4, conv.in_channels * conv.height * conv.width, 0, NULL, "x"))
        || !(grad_y = view(&held, grad_y_object, 4, conv.out_channels * conv.height * conv.width, 0, NULL, "grad y"))
        || !(grad_x = (float *)view(&held, grad_x_object, 4, conv.in_channels * conv.height * conv.width, 1, NULL,
                                    "grad x"))
        || !(grad_weight = (float *)view(&held, grad_weight_object, 4,
                                         (Py_ssize_t)conv.out_channels * conv.in_channels * conv.kernel * conv.kernel,
                                         1, NULL, "grad weight"))
        || !(grad_bias = (float *)view(&held, grad_bias_object, 4, conv.out_channels, 1, NULL, "grad bias"))) {
        release(&held);
        return NULL;
    }
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = conv_train_backward(&conv, x, grad_y, grad_x, grad_weight, grad_bias);
    Py_END_ALLOW_THREADS
    release(&held);
    return status ? PyErr_NoMemory() : Py_NewRef(Py_None);
}

static PyMethodDef methods[] = {
    {"read_signed", py_read_signed, METH_VARARGS, read_signed_doc},
    {"warp", py_warp, METH_VARARGS, warp_doc},
    {"decode_grid", py_decode_grid, METH_VARARGS, decode_grid_doc},
    {"pointwise_run", py_pointwise_run, METH_VARARGS, pointwise_run_doc},
    {"spatial_layer", py_spatial_layer, METH_VARARGS, spatial_layer_doc},
    {"filter_1d", py_filter_1d, METH_VARARGS, filter_doc},
    {"blend", py_blend, METH_VARARGS, blend_doc},
    {"image_samples", py_image_samples, METH_VARARGS, image_samples_doc},
    {"arm_train_forward", py_arm_train_forward, METH_VARARGS, arm_train_forward_doc},
    {"arm_train_backward", py_arm_train_backward, METH_VARARGS, arm_train_backward_doc},
    {"upsampling_train_forward", py_upsampling_train_forward, METH_VARARGS, upsampling_train_forward_doc},
    {"upsampling_train_backward", py_upsampling_train_backward, METH_VARARGS, upsampling_train_backward_doc},
    {"conv_train_forward", py_conv_train_forward, METH_VARARGS, conv_train_forward_doc},
    {"conv_train_backward", py_conv_train_backward, METH_VARARGS, conv_train_backward_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "The compiled integer decoder of coolchic_pl.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
