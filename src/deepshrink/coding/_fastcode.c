/*
 * Compiled decoders of deepshrink.coding (optional; the numpy code is the fallback and the
 * reference). Both functions work on untrusted data: every read is bounds-checked, the work is
 * O(count + table size), and a malformed stream yields a status code that the Python wrapper
 * turns into the same CorruptStream as the numpy decoder.
 *
 * prefix_decode(buf, start, stop, count, sym_table, len_table, width, out) -> (status, end)
 *     Decode `count` code words of a prefix code from bits [start, stop) of `buf` (MSB-first),
 *     each through a table lookup of the `width`-bit window at the current bit: `sym_table`
 *     (int32) and `len_table` (uint8, 0 = invalid) have 2**width entries. Bits past the end
 *     of `buf` read as zero. Writes the symbols into `out` (int64). Status: 0 ok,
 *     1 invalid code word, 2 code word running past `stop`. `end` is the bit after the last
 *     decoded code word.
 *
 * ans_decode(words, probs, count, out) -> (status, empty, bad)
 *     Decode `count` symbols of a constriction DefaultAnsCoder (32-bit words, 64-bit state,
 *     24-bit precision) under Categorical(probs, perfect=False): the fixed-point CDF is
 *     rebuilt exactly as constriction's `fast_quantized_cdf` does it. `words` holds the
 *     little-endian uint32 words of `get_compressed()`. Writes symbol - 1 into `out` (int64).
 *     Status: 0 ok, 3 the last word is zero (constriction refuses such data), 4 the model
 *     is not normalisable. `empty` is constriction's `is_empty()` after decoding, `bad` is
 *     true if a decoded symbol has probability 0.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { OK = 0, INVALID_CODE = 1, PAST_END = 2, ZERO_WORD = 3, BAD_MODEL = 4 };

#define ANS_PRECISION 24
#define ANS_BUCKET_BITS 12

/* MSB-first bit reader: `acc` holds the next `bits` bits of the stream left-aligned (the bits
   below them are zero); bytes past the end of the buffer read as zero. */
typedef struct {
    const uint8_t *b;
    Py_ssize_t n, next; /* buffer size, next byte to load */
    uint64_t acc;
    int bits;
} BitReader;

static inline void refill(BitReader *r)
{
    while (r->bits <= 56) {
        uint64_t byte = r->next < r->n ? r->b[r->next] : 0;
        r->acc |= byte << (56 - r->bits);
        r->next++;
        r->bits += 8;
    }
}

static BitReader bit_reader(const uint8_t *b, Py_ssize_t n, int64_t start)
{
    BitReader r = {b, n, (Py_ssize_t)(start >> 3), 0, 0};
    refill(&r);
    r.acc <<= start & 7;
    r.bits -= (int)(start & 7);
    return r;
}

/* The next little-endian uint32 word of an ANS stack, read from the end; the caller checks *left > 0. */
static inline uint64_t pop_word(const uint8_t *wb, Py_ssize_t *left)
{
    const uint8_t *w = wb + 4 * --*left;
    return (uint64_t)w[0] | (uint64_t)w[1] << 8 | (uint64_t)w[2] << 16 | (uint64_t)w[3] << 24;
}

/* 0 if `view` holds at least `items` items of `size` bytes, else -1 with a ValueError. */
static int check_buffer(Py_buffer *view, long long items, Py_ssize_t size, const char *name)
{
    if (items < 0 || items > view->len / size) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, too few for %lld items", name, view->len, items);
        return -1;
    }
    return 0;
}

static PyObject *prefix_decode(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer buf, syms, lens, out;
    long long start, stop, count;
    int width;
    if (!PyArg_ParseTuple(args, "y*LLLy*y*iw*", &buf, &start, &stop, &count, &syms, &lens, &width, &out))
        return NULL;
    PyObject *result = NULL;
    uint32_t *table = NULL;
    if (width < 1 || width > 24 || start < 0 || stop < start || stop > 8 * (long long)buf.len || count < 0) {
        PyErr_SetString(PyExc_ValueError, "prefix_decode: invalid width, bit range or count");
        goto done;
    }
    const Py_ssize_t entries = (Py_ssize_t)1 << width;
    if (check_buffer(&syms, entries, 4, "sym_table") || check_buffer(&lens, entries, 1, "len_table") ||
        check_buffer(&out, count, 8, "out"))
        goto done;

    /* One table of (symbol << 8 | length) entries: a single lookup per code word. */
    const int32_t *sym = (const int32_t *)syms.buf;
    const uint8_t *len = (const uint8_t *)lens.buf;
    table = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)entries);
    if (!table) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t v = 0; v < entries; v++) {
        if (sym[v] < 0 || sym[v] >= (1 << 24) || len[v] > width) {
            PyErr_SetString(PyExc_ValueError, "prefix_decode: symbols must be in [0, 2**24), lengths <= width");
            goto done;
        }
        table[v] = (uint32_t)sym[v] << 8 | len[v];
    }
    int64_t *o = (int64_t *)out.buf;
    const int drop = 64 - width;
    int64_t pos = start;
    int status = OK;
    Py_BEGIN_ALLOW_THREADS
    BitReader r = bit_reader((const uint8_t *)buf.buf, buf.len, start);
    for (int64_t i = 0; i < count; i++) {
        if (pos >= stop) {
            status = PAST_END;
            break;
        }
        if (r.bits < width)
            refill(&r);
        uint32_t e = table[r.acc >> drop];
        int l = (int)(e & 0xFF);
        if (l == 0) {
            status = INVALID_CODE;
            break;
        }
        if (pos + l > stop) {
            status = PAST_END;
            break;
        }
        o[i] = e >> 8;
        pos += l;
        r.acc <<= l;
        r.bits -= l;
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("iL", status, (long long)pos);
done:
    free(table);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&syms);
    PyBuffer_Release(&lens);
    PyBuffer_Release(&out);
    return result;
}

/* constriction's fast_quantized_cdf: cdf[i] = (u32)(sum(p[:i]) * scale) + i, sums in order. */
static int quantized_cdf(const double *p, Py_ssize_t m, uint32_t *cdf)
{
    const uint32_t total = (uint32_t)1 << ANS_PRECISION;
    if (m < 2 || m >= (Py_ssize_t)total - 1)
        return BAD_MODEL;
    double norm = 0.0;
    for (Py_ssize_t i = 0; i < m; i++)
        norm += p[i];
    if (!isnormal(norm) || norm < 0.0)
        return BAD_MODEL; /* constriction: the normalisation must be a positive normal number */
    const double scale = (double)(total - (uint32_t)m) / norm;
    double cum = 0.0;
    for (Py_ssize_t i = 0; i < m; i++) {
        double x = cum * scale;
        uint32_t q = !(x > 0.0) ? 0u : x >= 4294967295.0 ? 0xFFFFFFFFu : (uint32_t)x; /* Rust `as` */
        cdf[i] = q + (uint32_t)i;
        cum += p[i];
    }
    cdf[m] = total;
    for (Py_ssize_t i = 0; i < m; i++)
        if (cdf[i + 1] <= cdf[i])
            return BAD_MODEL; /* not leaky: constriction would refuse the model */
    return OK;
}

static PyObject *ans_decode(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer words, probs, out;
    long long count;
    if (!PyArg_ParseTuple(args, "y*y*Lw*", &words, &probs, &count, &out))
        return NULL;
    PyObject *result = NULL;
    uint32_t *cdf = NULL;
    uint32_t *bucket = NULL;
    uint64_t *pure = NULL;
    if (count < 0 || words.len % 4 || probs.len % 8) {
        PyErr_SetString(PyExc_ValueError, "ans_decode: invalid count or buffer sizes");
        goto done;
    }
    if (check_buffer(&out, count, 8, "out"))
        goto done;
    const Py_ssize_t m = probs.len / 8;
    const double *p = (const double *)probs.buf;
    cdf = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(m + 1));
    bucket = (uint32_t *)malloc(sizeof(uint32_t) * (((size_t)1 << ANS_BUCKET_BITS) + 1));
    pure = (uint64_t *)malloc(sizeof(uint64_t) * ((size_t)1 << ANS_BUCKET_BITS));
    if (!cdf || !bucket || !pure) {
        PyErr_NoMemory();
        goto done;
    }
    int status = quantized_cdf(p, m, cdf);
    int empty = 0, bad = 0;
    if (status == OK) {
        /* bucket[j]: the symbol whose interval holds quantile j << shift; the symbol of a
           quantile q lies in [bucket[q >> shift], bucket[(q >> shift) + 1]]. */
        const int shift = ANS_PRECISION - ANS_BUCKET_BITS;
        uint32_t s = 0;
        for (uint32_t j = 0; j <= (1u << ANS_BUCKET_BITS); j++) {
            uint32_t q = j << shift;
            if (q >= cdf[m])
                q = cdf[m] - 1;
            while (cdf[s + 1] <= q)
                s++;
            bucket[j] = s;
        }
        /* pure[j]: for a bucket inside one symbol s < 2**16 of nonzero probability, the whole
           lookup (s << 48 | freq << 24 | cdf[s]) in one load; else 0 (freq is never 0). */
        for (uint32_t j = 0; j < (1u << ANS_BUCKET_BITS); j++) {
            uint32_t lo = bucket[j];
            int one = cdf[lo + 1] >= (j + 1) << shift && lo < (1u << 16) && p[lo] > 0.0;
            pure[j] = one ? (uint64_t)lo << 48 | (uint64_t)(cdf[lo + 1] - cdf[lo]) << 24 | cdf[lo] : 0;
        }
        const uint8_t *wb = (const uint8_t *)words.buf;
        Py_ssize_t left = words.len / 4; /* words not yet read, read from the end */
        uint64_t state = 0;
        if (left > 0) {
            state = pop_word(wb, &left);
            if (state == 0)
                status = ZERO_WORD;
            else if (left > 0)
                state = (state << 32) | pop_word(wb, &left);
        }
        if (status == OK) {
            int64_t *o = (int64_t *)out.buf;
            const uint32_t mask = (1u << ANS_PRECISION) - 1;
            Py_BEGIN_ALLOW_THREADS
            for (int64_t i = 0; i < count; i++) {
                uint32_t q = (uint32_t)(state & mask);
                uint64_t e = pure[q >> shift];
                uint32_t sym = (uint32_t)(e >> 48), freq = (uint32_t)(e >> 24) & mask, left_cdf = (uint32_t)e & mask;
                if (!freq) {
                    uint32_t lo = bucket[q >> shift], hi = bucket[(q >> shift) + 1];
                    while (lo < hi) { /* largest sym in [lo, hi] with cdf[sym] <= q */
                        uint32_t mid = (lo + hi + 1) >> 1;
                        if (cdf[mid] <= q)
                            lo = mid;
                        else
                            hi = mid - 1;
                    }
                    bad |= !(p[lo] > 0.0);
                    sym = lo;
                    left_cdf = cdf[lo];
                    freq = cdf[lo + 1] - left_cdf;
                }
                o[i] = (int64_t)sym - 1;
                state = (state >> ANS_PRECISION) * freq + (q - left_cdf);
                if (state < ((uint64_t)1 << 32) && left > 0)
                    state = (state << 32) | pop_word(wb, &left);
            }
            Py_END_ALLOW_THREADS
            empty = state == 0;
        }
    }
    result = Py_BuildValue("iii", status, empty, bad);
done:
    free(cdf);
    free(bucket);
    free(pure);
    PyBuffer_Release(&words);
    PyBuffer_Release(&probs);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"prefix_decode", prefix_decode, METH_VARARGS, "Table decoding of a prefix code (see the module source)."},
    {"ans_decode", ans_decode, METH_VARARGS, "Decode a constriction ANS stream (see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcode", "Compiled decoders of deepshrink.coding.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastcode(void) { return PyModule_Create(&module); }
