/* deepshrink engine kernels: the layers of a network computed on its compressed weights.
 *
 * One definition of every kernel, used twice: copied into each exported model.c (where DS_API
 * is "static"), and compiled into a shared library the Python runtime loads with ctypes
 * (deepshrink/engine/native.py). Strict C99; the only headers are <stdint.h>, <stddef.h>,
 * <string.h> and <math.h>.
 *
 * Weights stay compressed (struct ds_weight); kernels decode them on the fly, a few entries at a
 * time, never to a dense matrix. A weight is viewed as rows x cols (rows = output features or
 * output channels; a convolution weight [out, in/groups, kh, kw] has cols = in/groups*kh*kw).
 * Its layout is one of:
 *   DS_DENSE      values[rows*cols] float32, row-major.
 *   DS_CB_DENSE   one codebook index per element, value_bits wide, in the bit stream; the weight
 *                 is table[index] (table[K] == 0).
 *   DS_CB_SPARSE  per row, counts[r] entries; entry i of the whole stream is a field of
 *                 w = gap_bits + value_bits bits at bit i*w: gap | index << gap_bits, where
 *                 gap = col - previous col - 1 (previous col = -1 at each row's start). A gap
 *                 too large for gap_bits is split by filler entries (gap 2^gap_bits - 1,
 *                 index K: weight table[K] == 0).
 *   DS_F_SPARSE   the same with fields of gap_bits bits (gaps only) and values[i] float32 for
 *                 entry i (fillers hold 0).
 *   DS_GRID       quantised weights: one integer q per element, value_bits (1..8) wide, in the
 *                 bit stream; element i is in group i / group (group divides cols, or is
 *                 rows*cols) and its weight is scales[g] * ((float)q - offsets[g]). The kernels
 *                 read it as DS_CB_DENSE with a codebook per group (scale * (k - offset)).
 * Bit streams are little-endian (bit j is bit j%8 of byte j/8), fields at most 25 bits wide, and
 * end with 8 zero bytes, so a field is read with one 32-bit little-endian load and two with one
 * 64-bit load.
 *
 * Activations are float32, one sample after another (n samples: x is n x cols for a linear
 * layer, n x C x H x W for a convolution). No kernel allocates memory.
 */
#ifndef DS_KERNELS_H
#define DS_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define DS_UNUSED __attribute__((unused))
#define DS_ALWAYS_INLINE __attribute__((always_inline))
#else
#define DS_UNUSED
#define DS_ALWAYS_INLINE
#endif

/* how the kernels are declared: exported by the shared library; "static" in a generated model.c */
#ifndef DS_API
#define DS_API
#endif
/* how ds_linear is declared: a generated model.c inlines it at each layer, where the layer's
   constant ds_weight lets the compiler fold the layout and the field widths (8% faster on
   LeNet-300-100) */
#ifndef DS_LINEAR_API
#define DS_LINEAR_API DS_API
#endif

enum { DS_DENSE = 0, DS_CB_DENSE = 1, DS_CB_SPARSE = 2, DS_F_SPARSE = 3, DS_GRID = 4 };

/* unary ops of ds_unary; alpha and beta are their parameters where they have them */
enum {
    DS_RELU = 0, DS_RELU6 = 1, DS_LEAKY_RELU = 2, /* alpha: negative slope */
    DS_SIGMOID = 3, DS_TANH = 4, DS_GELU = 5, DS_GELU_TANH = 6, DS_SILU = 7,
    DS_HARDSWISH = 8, DS_HARDSIGMOID = 9,
    DS_CLAMP = 10, /* to [alpha, beta] */
    DS_CLAMP_MIN = 11, /* at least alpha */
    DS_CLAMP_MAX = 12  /* at most alpha */
};

/* binary ops of ds_binary and ds_binary_scalar */
enum { DS_ADD = 0, DS_SUB = 1, DS_MUL = 2, DS_DIV = 3 };

typedef struct ds_weight {
    int32_t kind;               /* DS_DENSE, DS_CB_DENSE, DS_CB_SPARSE, DS_F_SPARSE or DS_GRID */
    int32_t rows, cols;
    int32_t gap_bits;           /* sparse layouts: bits of a gap field */
    int32_t value_bits;         /* codebook layouts: bits of an index field; DS_GRID: bits of q */
    int32_t group;              /* DS_GRID: elements per scale (contiguous, row-major) */
    const uint8_t *bits;        /* the bit stream (codebook and sparse layouts) */
    const uint16_t *counts16;   /* sparse layouts: entries per row (this or counts32) */
    const uint32_t *counts32;
    const float *table;         /* codebook layouts: K + 1 values, the last 0 */
    const float *values;        /* DS_DENSE: rows*cols weights; DS_F_SPARSE: one per entry */
    const float *scales;        /* DS_GRID: one scale per group */
    const float *offsets;       /* DS_GRID: one offset per group */
} ds_weight;

/* convolution geometry (a 1-D convolution is a 2-D one of height 1); pad_h and pad_w are the
   zero padding before the first row and column (the output size implies the rest) */
typedef struct ds_conv {
    int32_t in_c, in_h, in_w, out_c, out_h, out_w;
    int32_t k_h, k_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
} ds_conv;

/* pooling geometry over c channels; count_pad: an average counts the zero padding */
typedef struct ds_pool {
    int32_t c, in_h, in_w, out_h, out_w;
    int32_t k_h, k_w, stride_h, stride_w, pad_h, pad_w, count_pad;
} ds_pool;

/* y[n x rows] = x[n x cols] W^T + bias (bias may be NULL); x and y must not overlap */
DS_LINEAR_API void ds_linear(const ds_weight *w, const float *bias, const float *x, float *y, int32_t n);

/* the same on a batch stored feature-major: xt[cols x n] -> yt[rows x n] (each entry decoded once
   and applied to the n contiguous samples: the faster form for batches) */
DS_API void ds_linear_t(const ds_weight *w, const float *bias, const float *xt, float *yt, int32_t n);

/* y[n x out_c x out_h x out_w] = conv(x[n x in_c x in_h x in_w], W) + bias (may be NULL) */
DS_API void ds_conv2d(const ds_weight *w, const float *bias, const ds_conv *g, const float *x, float *y,
                      int32_t n);

/* the weight as a dense rows x cols matrix (tests; never called by a generated engine) */
DS_API void ds_to_dense(const ds_weight *w, float *out);

/* y = op(x) elementwise over count values; y may be x */
DS_API void ds_unary(int32_t op, float alpha, float beta, const float *x, float *y, size_t count);

/* y = x * scale[ch] + shift[ch] over n samples of c channels of plane values (batch norm,
   folded at export); y may be x */
DS_API void ds_affine(const float *scale, const float *shift, const float *x, float *y, int32_t n, int32_t c,
                      size_t plane);

/* y = a op b, broadcast: shape[ndim] is the output's shape (with the batch), a_strides and
   b_strides each input's element strides per dimension (0 where it is broadcast); y may be a or
   b when that input has the output's shape */
DS_API void ds_binary(int32_t op, const float *a, const int32_t *a_strides, const float *b,
                      const int32_t *b_strides, float *y, const int32_t *shape, int32_t ndim);

/* y = x op s (s op x with scalar_first) over count values; y may be x */
DS_API void ds_binary_scalar(int32_t op, const float *x, float s, int32_t scalar_first, float *y, size_t count);

/* max and average pooling of n samples (padding counts as -infinity for max) */
DS_API void ds_max_pool2d(const ds_pool *p, const float *x, float *y, int32_t n);
DS_API void ds_avg_pool2d(const ds_pool *p, const float *x, float *y, int32_t n);

/* adaptive pooling (PyTorch's windows: [floor(i*in/out), ceil((i+1)*in/out))) of count
   channels in total (samples x channels); is_max: maximum, else mean */
DS_API void ds_adaptive_pool2d(int32_t is_max, int32_t count, int32_t in_h, int32_t in_w, int32_t out_h,
                               int32_t out_w, const float *x, float *y);

/* softmax (or its log) along a dimension of size dim, between outer and inner sizes; y may be x */
DS_API void ds_softmax(int32_t log, const float *x, float *y, int32_t outer, int32_t dim, int32_t inner);

#endif /* DS_KERNELS_H */
