/* deepshrink engine kernels (see kernels.h for the layouts and the contract of each kernel). */
#include "kernels.h"

#include <math.h>
#include <string.h>

/* GCC vectorises loops with unknown trip counts only from -O3 (or with its dynamic cost model);
   the convolution's plane loops are such loops (1.4x faster on MobileNetV2). Other compilers
   ignore this block; clang vectorises them at -O2 anyway. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

/* the field of up to 25 bits starting at bit `bit` of stream s: one 32-bit little-endian load */
static inline uint32_t ds_field(const uint8_t *s, size_t bit) {
    const uint8_t *p = s + (bit >> 3);
    uint32_t v = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    return v >> (bit & 7u);
}

/* 64 bits of stream s from byte p, little-endian (one load where the target allows it) */
static inline uint64_t ds_load64(const uint8_t *p) {
    return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) | ((uint64_t)p[3] << 24) |
           ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) | ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

/* the codebook of DS_GRID group g: t[k] = scale * (k - offset) for every k of value_bits bits, the
   weight of q = k exactly (k - offset is exact in float32: one rounding, the multiplication) */
static inline void ds_grid_table(const ds_weight *w, size_t g, float *t) {
    const float sc = w->scales[g], off = w->offsets[g];
    const int32_t n = 1 << w->value_bits;
    int32_t k;
    for (k = 0; k < n; k++) t[k] = ((float)k - off) * sc;
}

static inline uint32_t ds_count(const ds_weight *w, int32_t r) {
    return w->counts16 ? (uint32_t)w->counts16[r] : w->counts32[r];
}

/* ---------------------------------------------------------------------------------------------
 * decoding a row a few entries at a time (convolutions, batches, dense expansion) */

enum { DS_CHUNK = 32 };

typedef struct ds_cursor {
    size_t entry;    /* index of the next entry in the whole weight */
    uint32_t left;   /* entries left in the row */
    int32_t col;     /* column of the last entry decoded (-1 at a row's start) */
} ds_cursor;

/* start row r; `entry` is the index of the row's first entry (the sum of the counts before it
   for sparse layouts, r * cols for dense ones) */
static inline void ds_row(const ds_weight *w, int32_t r, size_t entry, ds_cursor *c) {
    c->entry = entry;
    c->left = (w->kind == DS_CB_SPARSE || w->kind == DS_F_SPARSE) ? ds_count(w, r) : (uint32_t)w->cols;
    c->col = -1;
}

/* the next (at most DS_CHUNK) nonzero entries of the row: their columns and weights; returns how
   many (0 at the row's end); zeros (fillers, zero weights) are skipped */
static int32_t ds_next(const ds_weight *w, ds_cursor *c, int32_t *cols, float *vals) {
    int32_t k = 0;
    while (k == 0 && c->left) {
        uint32_t m = c->left < DS_CHUNK ? c->left : DS_CHUNK, i;
        size_t e = c->entry;
        int32_t col = c->col;
        switch (w->kind) {
        case DS_DENSE:
            for (i = 0; i < m; i++) {
                float v = w->values[e + i];
                cols[k] = ++col;
                vals[k] = v;
                k += v != 0.0f;
            }
            break;
        case DS_CB_DENSE: {
            const uint32_t vb = (uint32_t)w->value_bits, mask = (1u << vb) - 1u;
            for (i = 0; i < m; i++) {
                float v = w->table[ds_field(w->bits, (e + i) * vb) & mask];
                cols[k] = ++col;
                vals[k] = v;
                k += v != 0.0f;
            }
            break;
        }
        case DS_CB_SPARSE: {
            const uint32_t gb = (uint32_t)w->gap_bits, wd = gb + (uint32_t)w->value_bits;
            const uint32_t gmask = (1u << gb) - 1u, fmask = (1u << wd) - 1u;
            for (i = 0; i < m; i++) {
                uint32_t f = ds_field(w->bits, (e + i) * wd) & fmask;
                float v = w->table[f >> gb];
                col += (int32_t)(f & gmask) + 1;
                cols[k] = col;
                vals[k] = v;
                k += v != 0.0f;
            }
            break;
        }
        case DS_GRID: {
            const uint32_t vb = (uint32_t)w->value_bits, mask = (1u << vb) - 1u;
            const size_t group = (size_t)w->group;
            size_t g = e / group, next = (g + 1) * group; /* the element where group g + 1 starts */
            float sc = w->scales[g], off = w->offsets[g];
            for (i = 0; i < m; i++) {
                float v;
                if (e + i == next) {
                    g++;
                    next += group;
                    sc = w->scales[g];
                    off = w->offsets[g];
                }
                v = ((float)(ds_field(w->bits, (e + i) * vb) & mask) - off) * sc;
                cols[k] = ++col;
                vals[k] = v;
                k += v != 0.0f;
            }
            break;
        }
        default: { /* DS_F_SPARSE */
            const uint32_t gb = (uint32_t)w->gap_bits, gmask = (1u << gb) - 1u;
            for (i = 0; i < m; i++) {
                float v = w->values[e + i];
                col += (int32_t)(ds_field(w->bits, (e + i) * gb) & gmask) + 1;
                cols[k] = col;
                vals[k] = v;
                k += v != 0.0f;
            }
            break;
        }
        }
        c->entry = e + m;
        c->left -= m;
        c->col = col;
    }
    return k;
}

/* index of the first entry of the row after r */
static inline size_t ds_row_end(const ds_weight *w, int32_t r, size_t entry) {
    return entry + ((w->kind == DS_CB_SPARSE || w->kind == DS_F_SPARSE) ? ds_count(w, r) : (uint32_t)w->cols);
}

DS_API void ds_to_dense(const ds_weight *w, float *out) {
    int32_t r, cols[DS_CHUNK], k, i;
    float vals[DS_CHUNK];
    size_t entry = 0;
    ds_cursor c;
    memset(out, 0, (size_t)w->rows * (size_t)w->cols * sizeof(float));
    for (r = 0; r < w->rows; r++) {
        float *row = out + (size_t)r * (size_t)w->cols;
        ds_row(w, r, entry, &c);
        while ((k = ds_next(w, &c, cols, vals)) > 0)
            for (i = 0; i < k; i++) row[cols[i]] = vals[i];
        entry = ds_row_end(w, r, entry);
    }
}

/* ---------------------------------------------------------------------------------------------
 * linear layers: one sample with a loop per layout, several with the chunked decoder */

static inline DS_ALWAYS_INLINE void ds_linear_dense1(const ds_weight *w, const float *bias, const float *restrict x, float *restrict y) {
    const int32_t cols = w->cols;
    int32_t r, i;
    for (r = 0; r < w->rows; r++) {
        const float *restrict v = w->values + (size_t)r * (size_t)cols;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        for (i = 0; i + 4 <= cols; i += 4) {
            a0 += v[i] * x[i];
            a1 += v[i + 1] * x[i + 1];
            a2 += v[i + 2] * x[i + 2];
            a3 += v[i + 3] * x[i + 3];
        }
        for (; i < cols; i++) a0 += v[i] * x[i];
        y[r] = (bias ? bias[r] : 0.0f) + ((a0 + a1) + (a2 + a3));
    }
}

/* every element's index: eight at a time from one 64-bit load once the bit position is a whole
   byte (indices of at most 8 bits), else as many as a 64-bit load holds. DS_CB_DENSE looks the
   indices up in its codebook; DS_GRID in the codebook of their group (ds_grid_table, made where
   a group starts: a row is cut into runs of one group each) */
static inline DS_ALWAYS_INLINE void ds_linear_cb_dense1(const ds_weight *w, const float *bias,
                                                        const float *restrict x, float *restrict y) {
    const uint8_t *s = w->bits;
    const int grid = w->kind == DS_GRID;
    const uint32_t vb = (uint32_t)w->value_bits, mask = (1u << vb) - 1u, per = 57u / vb;
    const uint32_t cols = (uint32_t)w->cols;
    const size_t group = grid ? (size_t)w->group : 0;
    float tab[256];
    const float *t = grid ? tab : w->table;
    size_t bit = 0, next = 0, g = 0; /* DS_GRID: the element where group g starts */
    int32_t r;
    for (r = 0; r < w->rows; r++) {
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        uint32_t i = 0;
        while (i < cols) {
            uint32_t end = cols; /* of this run */
            if (grid) {
                const size_t e = (size_t)r * cols + i;
                if (e == next) {
                    ds_grid_table(w, g++, tab);
                    next += group;
                }
                if (next - e < (size_t)(cols - i)) end = i + (uint32_t)(next - e);
            }
            if (vb <= 8) {
                for (; i < end && (bit & 7u); i++, bit += vb) a0 += t[ds_field(s, bit) & mask] * x[i];
                for (; i + 8 <= end; i += 8, bit += 8 * vb) {
                    const uint64_t v = ds_load64(s + (bit >> 3));
                    a0 += t[(uint32_t)v & mask] * x[i];
                    a1 += t[(uint32_t)(v >> vb) & mask] * x[i + 1];
                    a2 += t[(uint32_t)(v >> 2 * vb) & mask] * x[i + 2];
                    a3 += t[(uint32_t)(v >> 3 * vb) & mask] * x[i + 3];
                    a0 += t[(uint32_t)(v >> 4 * vb) & mask] * x[i + 4];
                    a1 += t[(uint32_t)(v >> 5 * vb) & mask] * x[i + 5];
                    a2 += t[(uint32_t)(v >> 6 * vb) & mask] * x[i + 6];
                    a3 += t[(uint32_t)(v >> 7 * vb) & mask] * x[i + 7];
                }
            }
            while (i < end) { /* wider indices, and the run's end */
                const uint32_t k = end - i < per ? end - i : per;
                uint64_t v = ds_load64(s + (bit >> 3)) >> (bit & 7u);
                uint32_t j;
                bit += (size_t)k * vb;
                for (j = 0; j < k; j++, v >>= vb) a0 += t[(uint32_t)v & mask] * x[i + j];
                i += k;
            }
        }
        y[r] = (bias ? bias[r] : 0.0f) + ((a0 + a1) + (a2 + a3));
    }
}

/* four fields per 64-bit load (two when they are wider than 14 bits); entry i of a row is at
   column (sum of its gaps so far) + i, so the only dependency chain is one add per entry */
static inline DS_ALWAYS_INLINE void ds_linear_cb_sparse1(const ds_weight *w, const float *bias, const float *restrict x, float *restrict y) {
    const uint8_t *s = w->bits;
    const float *t = w->table;
    const uint32_t gb = (uint32_t)w->gap_bits, wd = gb + (uint32_t)w->value_bits;
    const uint32_t gmask = (1u << gb) - 1u, fmask = (1u << wd) - 1u;
    const int four = 4 * wd <= 57;
    size_t bit = 0;
    int32_t r;
    for (r = 0; r < w->rows; r++) {
        const uint32_t cnt = ds_count(w, r);
        uint32_t i = 0;
        size_t sum = 0;      /* the row's gaps so far */
        const float *xi = x; /* x + i */
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        if (four) {
            for (; i + 4 <= cnt; i += 4, bit += 4 * wd, xi += 4) {
                const uint64_t v = ds_load64(s + (bit >> 3)) >> (bit & 7u);
                const uint32_t f0 = (uint32_t)v & fmask, f1 = (uint32_t)(v >> wd) & fmask;
                const uint32_t f2 = (uint32_t)(v >> 2 * wd) & fmask, f3 = (uint32_t)(v >> 3 * wd) & fmask;
                sum += f0 & gmask;
                a0 += t[f0 >> gb] * xi[sum];
                sum += f1 & gmask;
                a1 += t[f1 >> gb] * xi[sum + 1];
                sum += f2 & gmask;
                a2 += t[f2 >> gb] * xi[sum + 2];
                sum += f3 & gmask;
                a3 += t[f3 >> gb] * xi[sum + 3];
            }
        }
        for (; i + 2 <= cnt; i += 2, bit += 2 * wd, xi += 2) {
            const uint64_t v = ds_load64(s + (bit >> 3)) >> (bit & 7u);
            const uint32_t f0 = (uint32_t)v & fmask, f1 = (uint32_t)(v >> wd) & fmask;
            sum += f0 & gmask;
            a0 += t[f0 >> gb] * xi[sum];
            sum += f1 & gmask;
            a1 += t[f1 >> gb] * xi[sum + 1];
        }
        if (i < cnt) {
            const uint32_t f = ds_field(s, bit) & fmask;
            sum += f & gmask;
            a0 += t[f >> gb] * xi[sum];
            bit += wd;
        }
        y[r] = (bias ? bias[r] : 0.0f) + ((a0 + a1) + (a2 + a3));
    }
}

static inline DS_ALWAYS_INLINE void ds_linear_f_sparse1(const ds_weight *w, const float *bias,
                                                        const float *restrict x, float *restrict y) {
    const uint8_t *s = w->bits;
    const float *v = w->values;
    const uint32_t gb = (uint32_t)w->gap_bits, gmask = (1u << gb) - 1u;
    size_t e = 0;
    int32_t r;
    for (r = 0; r < w->rows; r++) {
        const uint32_t cnt = ds_count(w, r);
        uint32_t i = 0;
        size_t sum = 0;      /* the row's gaps so far: entry i is at column sum + i */
        const float *xi = x; /* x + i */
        float a0 = 0.0f, a1 = 0.0f;
        for (; i + 2 <= cnt; i += 2, e += 2, xi += 2) {
            const size_t bit = e * gb;
            const uint64_t f = ds_load64(s + (bit >> 3)) >> (bit & 7u);
            sum += (uint32_t)f & gmask;
            a0 += v[e] * xi[sum];
            sum += (uint32_t)(f >> gb) & gmask;
            a1 += v[e + 1] * xi[sum + 1];
        }
        if (i < cnt) {
            sum += ds_field(s, e * gb) & gmask;
            a0 += v[e] * xi[sum];
            e++;
        }
        y[r] = (bias ? bias[r] : 0.0f) + (a0 + a1);
    }
}

DS_LINEAR_API void ds_linear(const ds_weight *w, const float *bias, const float *x, float *y, int32_t n) {
    const int32_t rows = w->rows, ncols = w->cols;
    int32_t r, s, k, i, cols[DS_CHUNK];
    float vals[DS_CHUNK];
    size_t entry = 0;
    ds_cursor c;
    if (n == 1) {
        switch (w->kind) {
        case DS_DENSE: ds_linear_dense1(w, bias, x, y); return;
        case DS_CB_DENSE:
        case DS_GRID: ds_linear_cb_dense1(w, bias, x, y); return;
        case DS_CB_SPARSE: ds_linear_cb_sparse1(w, bias, x, y); return;
        default: ds_linear_f_sparse1(w, bias, x, y); return;
        }
    }
    for (r = 0; r < rows; r++) { /* each entry decoded once, applied to every sample */
        for (s = 0; s < n; s++) y[(size_t)s * (size_t)rows + (size_t)r] = bias ? bias[r] : 0.0f;
        ds_row(w, r, entry, &c);
        while ((k = ds_next(w, &c, cols, vals)) > 0) {
            for (s = 0; s < n; s++) {
                const float *xs = x + (size_t)s * (size_t)ncols;
                float a0 = 0.0f, a1 = 0.0f;
                for (i = 0; i + 2 <= k; i += 2) {
                    a0 += vals[i] * xs[cols[i]];
                    a1 += vals[i + 1] * xs[cols[i + 1]];
                }
                if (i < k) a0 += vals[i] * xs[cols[i]];
                y[(size_t)s * (size_t)rows + (size_t)r] += a0 + a1;
            }
        }
        entry = ds_row_end(w, r, entry);
    }
}

DS_API void ds_linear_t(const ds_weight *w, const float *bias, const float *xt, float *yt, int32_t n) {
    const size_t m = (size_t)n;
    int32_t r, k, i, cols[DS_CHUNK];
    float vals[DS_CHUNK];
    size_t entry = 0, j;
    ds_cursor c;
    for (r = 0; r < w->rows; r++) { /* each entry adds w * (its input feature over the batch) */
        float *restrict acc = yt + (size_t)r * m;
        const float b = bias ? bias[r] : 0.0f;
        for (j = 0; j < m; j++) acc[j] = b;
        ds_row(w, r, entry, &c);
        while ((k = ds_next(w, &c, cols, vals)) > 0) {
            for (i = 0; i + 2 <= k; i += 2) {
                const float *restrict p = xt + (size_t)cols[i] * m, *restrict q = xt + (size_t)cols[i + 1] * m;
                const float u = vals[i], v = vals[i + 1];
                for (j = 0; j < m; j++) acc[j] += u * p[j] + v * q[j];
            }
            if (i < k) {
                const float *restrict p = xt + (size_t)cols[i] * m;
                const float u = vals[i];
                for (j = 0; j < m; j++) acc[j] += u * p[j];
            }
        }
        entry = ds_row_end(w, r, entry);
    }
}

/* ---------------------------------------------------------------------------------------------
 * convolution: every weight entry (ic, ky, kx) of an output channel adds w * (the input plane
 * ic, shifted) to the output plane; the loops are clipped to the padding */

/* the output rows [oy0, oy1) and columns from ox0 (len of them) that the tap of kernel position
   (ky, kx) reaches inside the input, and its input offset (dy, dx); len <= 0 when none */
typedef struct { int32_t dy, dx, oy0, oy1, ox0, len; } ds_span;

static ds_span ds_tap_span(const ds_conv *g, int32_t ky, int32_t kx) {
    const int32_t sh = g->stride_h, sw = g->stride_w;
    ds_span s;
    int32_t ox1;
    s.dy = ky * g->dil_h - g->pad_h;
    s.dx = kx * g->dil_w - g->pad_w;
    s.oy0 = s.dy >= 0 ? 0 : (-s.dy + sh - 1) / sh;
    s.ox0 = s.dx >= 0 ? 0 : (-s.dx + sw - 1) / sw;
    s.oy1 = g->in_h - 1 - s.dy < 0 ? 0 : (g->in_h - 1 - s.dy) / sh + 1;
    ox1 = g->in_w - 1 - s.dx < 0 ? 0 : (g->in_w - 1 - s.dx) / sw + 1;
    if (s.oy1 > g->out_h) s.oy1 = g->out_h;
    if (ox1 > g->out_w) ox1 = g->out_w;
    s.len = ox1 - s.ox0;
    return s;
}

static void ds_tap(const ds_conv *g, float wv, int32_t ky, int32_t kx, const float *in, float *out) {
    const int32_t sh = g->stride_h, sw = g->stride_w;
    const ds_span sp = ds_tap_span(g, ky, kx);
    const int32_t dy = sp.dy, dx = sp.dx, oy0 = sp.oy0, oy1 = sp.oy1, ox0 = sp.ox0, len = sp.len;
    int32_t oy, i;
    if (len <= 0) return;
    for (oy = oy0; oy < oy1; oy++) {
        const float *ip = in + (size_t)(oy * sh + dy) * (size_t)g->in_w + (size_t)(ox0 * sw + dx);
        float *op = out + (size_t)oy * (size_t)g->out_w + (size_t)ox0;
        if (sw == 1) {
            for (i = 0; i < len; i++) op[i] += wv * ip[i];
        } else {
            for (i = 0; i < len; i++) op[i] += wv * ip[(size_t)i * (size_t)sw];
        }
    }
}

/* four taps of one kernel position (ky, kx) at once, from four input planes: a quarter of the
   output's loads and stores (pointwise convolutions are all such taps) */
static void ds_tap4(const ds_conv *g, const float *wv, int32_t ky, int32_t kx, const float *const *in, float *out) {
    const int32_t sh = g->stride_h, sw = g->stride_w;
    const ds_span sp = ds_tap_span(g, ky, kx);
    const int32_t dy = sp.dy, dx = sp.dx, oy0 = sp.oy0, oy1 = sp.oy1, ox0 = sp.ox0, len = sp.len;
    const float w0 = wv[0], w1 = wv[1], w2 = wv[2], w3 = wv[3];
    int32_t oy, i;
    if (len <= 0) return;
    for (oy = oy0; oy < oy1; oy++) {
        const size_t at = (size_t)(oy * sh + dy) * (size_t)g->in_w + (size_t)(ox0 * sw + dx);
        const float *restrict a = in[0] + at, *restrict b = in[1] + at, *restrict c = in[2] + at,
                    *restrict d = in[3] + at;
        float *restrict op = out + (size_t)oy * (size_t)g->out_w + (size_t)ox0;
        if (sw == 1) {
            for (i = 0; i < len; i++) op[i] += w0 * a[i] + w1 * b[i] + w2 * c[i] + w3 * d[i];
        } else {
            for (i = 0; i < len; i++) {
                const size_t j = (size_t)i * (size_t)sw;
                op[i] += w0 * a[j] + w1 * b[j] + w2 * c[j] + w3 * d[j];
            }
        }
    }
}

DS_API void ds_conv2d(const ds_weight *w, const float *bias, const ds_conv *g, const float *x, float *y,
                      int32_t n) {
    const size_t in_plane = (size_t)g->in_h * (size_t)g->in_w, out_plane = (size_t)g->out_h * (size_t)g->out_w;
    const size_t in_sample = (size_t)g->in_c * in_plane, out_sample = (size_t)g->out_c * out_plane;
    const int32_t taps = g->k_h * g->k_w, per_group_out = g->out_c / g->groups, per_group_in = g->in_c / g->groups;
    int32_t oc, s, k, i, cols[DS_CHUNK];
    float vals[DS_CHUNK];
    size_t entry = 0, j;
    ds_cursor c;
    for (oc = 0; oc < g->out_c; oc++) {
        const int32_t ic0 = (oc / per_group_out) * per_group_in;
        for (s = 0; s < n; s++) {
            float *out = y + (size_t)s * out_sample + (size_t)oc * out_plane;
            const float b = bias ? bias[oc] : 0.0f;
            for (j = 0; j < out_plane; j++) out[j] = b;
        }
        ds_row(w, oc, entry, &c);
        while ((k = ds_next(w, &c, cols, vals)) > 0) {
            for (i = 0; i < k;) {
                const int32_t t = cols[i] % taps;
                if (i + 4 <= k && cols[i + 1] % taps == t && cols[i + 2] % taps == t && cols[i + 3] % taps == t) {
                    for (s = 0; s < n; s++) { /* four input channels at the same kernel position */
                        const float *xs = x + (size_t)s * in_sample, *in[4];
                        int32_t q;
                        for (q = 0; q < 4; q++) in[q] = xs + (size_t)(ic0 + cols[i + q] / taps) * in_plane;
                        ds_tap4(g, vals + i, t / g->k_w, t % g->k_w, in, y + (size_t)s * out_sample + (size_t)oc * out_plane);
                    }
                    i += 4;
                    continue;
                }
                for (s = 0; s < n; s++)
                    ds_tap(g, vals[i], t / g->k_w, t % g->k_w,
                           x + (size_t)s * in_sample + (size_t)(ic0 + cols[i] / taps) * in_plane,
                           y + (size_t)s * out_sample + (size_t)oc * out_plane);
                i++;
            }
        }
        entry = ds_row_end(w, oc, entry);
    }
}

/* ---------------------------------------------------------------------------------------------
 * elementwise */

static inline float ds_relu6f(float v) { return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v); }

DS_API void ds_unary(int32_t op, float alpha, float beta, const float *x, float *y, size_t count) {
    size_t i;
    switch (op) {
    case DS_RELU: for (i = 0; i < count; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
    case DS_RELU6: for (i = 0; i < count; i++) y[i] = ds_relu6f(x[i]); break;
    case DS_LEAKY_RELU: for (i = 0; i < count; i++) y[i] = x[i] > 0.0f ? x[i] : alpha * x[i]; break;
    case DS_SIGMOID: for (i = 0; i < count; i++) y[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case DS_TANH: for (i = 0; i < count; i++) y[i] = tanhf(x[i]); break;
    case DS_GELU:
        for (i = 0; i < count; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
        break;
    case DS_GELU_TANH:
        for (i = 0; i < count; i++) {
            const float v = x[i];
            y[i] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        }
        break;
    case DS_SILU: for (i = 0; i < count; i++) y[i] = x[i] / (1.0f + expf(-x[i])); break;
    case DS_HARDSWISH: for (i = 0; i < count; i++) y[i] = x[i] * ds_relu6f(x[i] + 3.0f) / 6.0f; break;
    case DS_HARDSIGMOID: for (i = 0; i < count; i++) y[i] = ds_relu6f(x[i] + 3.0f) / 6.0f; break;
    case DS_CLAMP:
        for (i = 0; i < count; i++) y[i] = x[i] < alpha ? alpha : (x[i] > beta ? beta : x[i]);
        break;
    case DS_CLAMP_MIN: for (i = 0; i < count; i++) y[i] = x[i] < alpha ? alpha : x[i]; break;
    default: for (i = 0; i < count; i++) y[i] = x[i] > alpha ? alpha : x[i]; break; /* DS_CLAMP_MAX */
    }
}

DS_API void ds_affine(const float *scale, const float *shift, const float *x, float *y, int32_t n, int32_t c,
                      size_t plane) {
    int32_t s, ch;
    size_t j;
    for (s = 0; s < n; s++)
        for (ch = 0; ch < c; ch++) {
            const size_t o = ((size_t)s * (size_t)c + (size_t)ch) * plane;
            const float a = scale[ch], b = shift[ch];
            for (j = 0; j < plane; j++) y[o + j] = x[o + j] * a + b;
        }
}

static inline float ds_apply(int32_t op, float a, float b) {
    switch (op) {
    case DS_ADD: return a + b;
    case DS_SUB: return a - b;
    case DS_MUL: return a * b;
    default: return a / b;
    }
}

DS_API void ds_binary(int32_t op, const float *a, const int32_t *a_strides, const float *b,
                      const int32_t *b_strides, float *y, const int32_t *shape, int32_t ndim) {
    int32_t idx[9] = {0}, d;
    const int32_t last = ndim - 1, len = shape[last], sa = a_strides[last], sb = b_strides[last];
    size_t oa = 0, ob = 0, oy = 0, total = 1;
    int32_t i;
    for (d = 0; d < last; d++) total *= (size_t)shape[d];
    while (total--) {
        if (sa == 1 && sb == 1) {
            switch (op) {
            case DS_ADD: for (i = 0; i < len; i++) y[oy + i] = a[oa + i] + b[ob + i]; break;
            case DS_SUB: for (i = 0; i < len; i++) y[oy + i] = a[oa + i] - b[ob + i]; break;
            case DS_MUL: for (i = 0; i < len; i++) y[oy + i] = a[oa + i] * b[ob + i]; break;
            default: for (i = 0; i < len; i++) y[oy + i] = a[oa + i] / b[ob + i]; break;
            }
        } else {
            for (i = 0; i < len; i++)
                y[oy + i] = ds_apply(op, a[oa + (size_t)i * (size_t)sa], b[ob + (size_t)i * (size_t)sb]);
        }
        oy += (size_t)len;
        for (d = last - 1; d >= 0; d--) { /* the next index of the outer dimensions */
            oa += (size_t)a_strides[d];
            ob += (size_t)b_strides[d];
            if (++idx[d] < shape[d]) break;
            oa -= (size_t)a_strides[d] * (size_t)shape[d];
            ob -= (size_t)b_strides[d] * (size_t)shape[d];
            idx[d] = 0;
        }
    }
}

DS_API void ds_binary_scalar(int32_t op, const float *x, float s, int32_t scalar_first, float *y, size_t count) {
    size_t i;
    if (scalar_first)
        for (i = 0; i < count; i++) y[i] = ds_apply(op, s, x[i]);
    else
        for (i = 0; i < count; i++) y[i] = ds_apply(op, x[i], s);
}

/* ---------------------------------------------------------------------------------------------
 * pooling and softmax */

DS_API void ds_max_pool2d(const ds_pool *p, const float *x, float *y, int32_t n) {
    const size_t in_plane = (size_t)p->in_h * (size_t)p->in_w, out_plane = (size_t)p->out_h * (size_t)p->out_w;
    int32_t pl, oy, ox, iy, ix;
    for (pl = 0; pl < n * p->c; pl++) {
        const float *in = x + (size_t)pl * in_plane;
        float *out = y + (size_t)pl * out_plane;
        for (oy = 0; oy < p->out_h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_h, y1 = y0 + p->k_h;
            for (ox = 0; ox < p->out_w; ox++) {
                const int32_t x0 = ox * p->stride_w - p->pad_w, x1 = x0 + p->k_w;
                float m = -INFINITY;
                for (iy = y0 < 0 ? 0 : y0; iy < (y1 < p->in_h ? y1 : p->in_h); iy++)
                    for (ix = x0 < 0 ? 0 : x0; ix < (x1 < p->in_w ? x1 : p->in_w); ix++) {
                        const float v = in[(size_t)iy * (size_t)p->in_w + (size_t)ix];
                        if (v > m || v != v) m = v; /* NaN wins, as in PyTorch */
                    }
                out[(size_t)oy * (size_t)p->out_w + (size_t)ox] = m;
            }
        }
    }
}

DS_API void ds_avg_pool2d(const ds_pool *p, const float *x, float *y, int32_t n) {
    const size_t in_plane = (size_t)p->in_h * (size_t)p->in_w, out_plane = (size_t)p->out_h * (size_t)p->out_w;
    int32_t pl, oy, ox, iy, ix;
    for (pl = 0; pl < n * p->c; pl++) {
        const float *in = x + (size_t)pl * in_plane;
        float *out = y + (size_t)pl * out_plane;
        for (oy = 0; oy < p->out_h; oy++) {
            int32_t y0 = oy * p->stride_h - p->pad_h, y1 = y0 + p->k_h;
            if (y1 > p->in_h + p->pad_h) y1 = p->in_h + p->pad_h;
            for (ox = 0; ox < p->out_w; ox++) {
                int32_t x0 = ox * p->stride_w - p->pad_w, x1 = x0 + p->k_w, area, cy0, cy1, cx0, cx1;
                float sum = 0.0f;
                if (x1 > p->in_w + p->pad_w) x1 = p->in_w + p->pad_w;
                area = (y1 - y0) * (x1 - x0);
                cy0 = y0 < 0 ? 0 : y0;
                cy1 = y1 < p->in_h ? y1 : p->in_h;
                cx0 = x0 < 0 ? 0 : x0;
                cx1 = x1 < p->in_w ? x1 : p->in_w;
                for (iy = cy0; iy < cy1; iy++)
                    for (ix = cx0; ix < cx1; ix++) sum += in[(size_t)iy * (size_t)p->in_w + (size_t)ix];
                if (!p->count_pad) area = (cy1 - cy0) * (cx1 - cx0);
                out[(size_t)oy * (size_t)p->out_w + (size_t)ox] = sum / (float)area;
            }
        }
    }
}

DS_API void ds_adaptive_pool2d(int32_t is_max, int32_t count, int32_t in_h, int32_t in_w, int32_t out_h,
                               int32_t out_w, const float *x, float *y) {
    const size_t in_plane = (size_t)in_h * (size_t)in_w, out_plane = (size_t)out_h * (size_t)out_w;
    int32_t pl, oy, ox, iy, ix;
    for (pl = 0; pl < count; pl++) {
        const float *in = x + (size_t)pl * in_plane;
        float *out = y + (size_t)pl * out_plane;
        for (oy = 0; oy < out_h; oy++) {
            const int32_t y0 = (int32_t)(((int64_t)oy * in_h) / out_h);
            const int32_t y1 = (int32_t)((((int64_t)oy + 1) * in_h + out_h - 1) / out_h);
            for (ox = 0; ox < out_w; ox++) {
                const int32_t x0 = (int32_t)(((int64_t)ox * in_w) / out_w);
                const int32_t x1 = (int32_t)((((int64_t)ox + 1) * in_w + out_w - 1) / out_w);
                float acc = is_max ? -INFINITY : 0.0f;
                for (iy = y0; iy < y1; iy++)
                    for (ix = x0; ix < x1; ix++) {
                        const float v = in[(size_t)iy * (size_t)in_w + (size_t)ix];
                        if (!is_max) acc += v;
                        else if (v > acc || v != v) acc = v;
                    }
                out[(size_t)oy * (size_t)out_w + (size_t)ox] = is_max ? acc : acc / (float)((y1 - y0) * (x1 - x0));
            }
        }
    }
}

DS_API void ds_softmax(int32_t log, const float *x, float *y, int32_t outer, int32_t dim, int32_t inner) {
    int32_t o, in, d;
    for (o = 0; o < outer; o++)
        for (in = 0; in < inner; in++) {
            const size_t base = (size_t)o * (size_t)dim * (size_t)inner + (size_t)in;
            float m = -INFINITY, sum = 0.0f;
            for (d = 0; d < dim; d++) {
                const float v = x[base + (size_t)d * (size_t)inner];
                if (v > m) m = v;
            }
            for (d = 0; d < dim; d++) sum += expf(x[base + (size_t)d * (size_t)inner] - m);
            for (d = 0; d < dim; d++) {
                const size_t j = base + (size_t)d * (size_t)inner;
                y[j] = log ? x[j] - m - logf(sum) : expf(x[j] - m) / sum;
            }
        }
}
