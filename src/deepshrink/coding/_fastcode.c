/*
 * Compiled coders of deepshrink.coding (optional; the numpy/Python code is the fallback and the
 * reference). The decoders work on untrusted data: every read is bounds-checked, the work is
 * O(count + table size), and a malformed stream yields a status code that the Python wrapper
 * turns into the same CorruptStream as the reference decoder.
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

/* ---------------------------------------------------------------------------------------------
 * Context-adaptive binary range coding of a pruned, shared weight matrix (deepshrink.coding.context
 * holds the specification and the pure-Python reference; both must give the same bytes).
 *
 * ctx_encode(mask, vals, rows, cols, h, w, k, z) -> (mask_bytes, val_bytes)
 *     `mask` holds rows*cols bytes (0/1, row-major), `vals` the uint16 codebook index of every kept
 *     weight in row-major order. Arguments are validated by the Python wrapper.
 * ctx_decode(mask_bytes, val_bytes, rows, cols, h, w, k, z, nnz, out_mask, out_vals) -> status
 *     Decodes into `out_mask` (rows*cols bytes) and `out_vals` (nnz uint16). Status: 0 ok; for the
 *     mask stream 5, 6, 7, 8 and for the value stream 9, 10, 11, 12: it ends early, holds bytes it
 *     never reads, ends in an impossible coder state, fails its check value; 13 the mask keeps a
 *     number of weights other than nnz. Work is O(rows*cols + nnz*log2 k), whatever the input.
 */

#define CTX_PROB_BITS 16
#define CTX_ONE (1u << CTX_PROB_BITS)
#define CTX_P_MIN 32u
#define CTX_RATE_MAX 8
#define CTX_WARM 64
#define CTX_TOP (1u << 24)
#define CTX_PAD 3
#define CTX_MASK_CONTEXTS 112
#define CTX_CHECK_BITS 16
/* The check value of a stream: h = (31 h + bit) mod 2^16 over its coded bits. */
#define CTX_HASH(h, bit) (((h) * 31u + (uint32_t)(bit)) & 0xFFFFu)

static const uint32_t TH_COL[6] = {5, 13, 26, 51, 90, 154};
static const uint32_t TH_ROW[3] = {13, 26, 51};

typedef struct {
    uint16_t p, n; /* P(1) in 1/65536; bits seen, saturating at CTX_WARM */
} Prob;

static inline uint32_t prob_one(const Prob *p)
{
    uint32_t q = p->p;
    return q < CTX_P_MIN ? CTX_P_MIN : q > CTX_ONE - CTX_P_MIN ? CTX_ONE - CTX_P_MIN : q;
}

/* Adapt at rate 2^-r, r = min(1 + bit length of the bits seen, CTX_RATE_MAX). */
static inline void prob_update(Prob *p, int bit)
{
    int r = 1;
    for (uint32_t c = p->n; c; c >>= 1)
        r++;
    if (r > CTX_RATE_MAX)
        r = CTX_RATE_MAX;
    if (bit)
        p->p += (uint16_t)((CTX_ONE - p->p) >> r);
    else
        p->p -= p->p >> r;
    if (p->n < CTX_WARM)
        p->n++;
}

static Prob *new_probs(size_t n)
{
    Prob *p = (Prob *)malloc(sizeof(Prob) * (n ? n : 1));
    if (p)
        for (size_t i = 0; i < n; i++)
            p[i].p = (uint16_t)(CTX_ONE >> 1), p[i].n = 0;
    return p;
}

/* LZMA-style range encoder: 64-bit low with a pending byte and a run of 0xFF for carries. */
typedef struct {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    uint64_t pending; /* bytes owed: the cache and pending - 1 bytes of 0xFF */
    uint8_t *buf;
    size_t len, cap;
    int oom;
    uint32_t hash; /* CTX_HASH of the coded bits */
} RangeEnc;

static void enc_put(RangeEnc *e, uint8_t byte)
{
    if (e->len == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 256;
        uint8_t *b = (uint8_t *)realloc(e->buf, cap);
        if (!b) {
            e->oom = 1;
            return;
        }
        e->buf = b;
        e->cap = cap;
    }
    e->buf[e->len++] = byte;
}

static void enc_shift(RangeEnc *e)
{
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32);
        uint8_t temp = e->cache;
        do {
            enc_put(e, (uint8_t)(temp + carry));
            temp = 0xFF;
        } while (--e->pending != 0);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->pending++;
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static inline void enc_bit(RangeEnc *e, Prob *p, int bit)
{
    uint32_t bound = (e->range >> CTX_PROB_BITS) * (CTX_ONE - prob_one(p));
    if (bit) {
        e->low += bound;
        e->range -= bound;
    } else {
        e->range = bound;
    }
    prob_update(p, bit);
    e->hash = CTX_HASH(e->hash, bit);
    while (e->range < CTX_TOP) {
        e->range <<= 8;
        enc_shift(e);
    }
}

/* A bit at probability 1/2, not adapted and not hashed (the check value). */
static inline void enc_even(RangeEnc *e, int bit)
{
    uint32_t bound = e->range >> 1;
    if (bit) {
        e->low += bound;
        e->range -= bound;
    } else {
        e->range = bound;
    }
    while (e->range < CTX_TOP) {
        e->range <<= 8;
        enc_shift(e);
    }
}

/* Ends the stream at the value of [low, low + range) whose low 24 bits are zero, writes it, and
   drops the first byte (always 0) and the last CTX_PAD (zero) bytes, which the decoder reads
   back as zeros. Returns a new bytes object or NULL. */
static PyObject *enc_finish(RangeEnc *e)
{
    uint32_t check = e->hash;
    for (int b = CTX_CHECK_BITS - 1; b >= 0; b--)
        enc_even(e, (int)((check >> b) & 1));
    e->low = (e->low + (CTX_TOP - 1)) & ~(uint64_t)(CTX_TOP - 1);
    for (int i = 0; i < 5; i++)
        enc_shift(e);
    if (e->oom)
        return PyErr_NoMemory();
    return PyBytes_FromStringAndSize((const char *)e->buf + 1, (Py_ssize_t)(e->len - 1 - CTX_PAD));
}

typedef struct {
    const uint8_t *b;
    Py_ssize_t n, pos; /* pos may pass n: bytes past the end read as zero */
    uint32_t range, code, hash;
} RangeDec;

static inline uint32_t dec_byte(RangeDec *d)
{
    uint32_t v = d->pos < d->n ? d->b[d->pos] : 0;
    d->pos++;
    return v;
}

static void dec_init(RangeDec *d, const uint8_t *b, Py_ssize_t n)
{
    d->b = b;
    d->n = n;
    d->pos = 0;
    d->range = 0xFFFFFFFFu;
    d->code = 0;
    d->hash = 0;
    for (int i = 0; i < 4; i++)
        d->code = (d->code << 8) | dec_byte(d);
}

/* One binary decision: 0 below ``bound`` in the current range, 1 above; then renormalise. */
static inline int dec_split(RangeDec *d, uint32_t bound)
{
    int bit;
    if (d->code < bound) {
        d->range = bound;
        bit = 0;
    } else {
        d->code -= bound;
        d->range -= bound;
        bit = 1;
    }
    while (d->range < CTX_TOP) {
        d->range <<= 8;
        d->code = (d->code << 8) | dec_byte(d);
    }
    return bit;
}

static inline int dec_bit(RangeDec *d, Prob *p)
{
    int bit = dec_split(d, (d->range >> CTX_PROB_BITS) * (CTX_ONE - prob_one(p)));
    prob_update(p, bit);
    d->hash = CTX_HASH(d->hash, bit);
    return bit;
}

static inline int dec_even(RangeDec *d)
{
    return dec_split(d, d->range >> 1);
}

/* Reads the check value; 0 if the decoder ended exactly where a valid stream ends with the check
   value of the bits it decoded, else the status offset 1..4. */
static int dec_check(RangeDec *d)
{
    uint32_t check = 0;
    for (int b = 0; b < CTX_CHECK_BITS; b++)
        check = (check << 1) | (uint32_t)dec_even(d);
    if (d->pos > d->n + CTX_PAD)
        return 1;
    if (d->pos < d->n + CTX_PAD)
        return 2;
    if (d->code >= d->range)
        return 3;
    return check != d->hash ? 4 : 0;
}

static inline int ctx_bucket(uint64_t count, uint64_t seen, const uint32_t *th, int n)
{
    int b = 0;
    for (int k = 0; k < n; k++)
        b += (2 * count + 1) * 128 >= (uint64_t)th[k] * (seen + 1);
    return b;
}

/* The tree depth of the magnitudes: bits of max(z, k - z) - 1 (0 when each side has <= 1 value). */
static int ctx_depth(long long k, long long z)
{
    long long top = (z > k - z ? z : k - z) - 1;
    int d = 0;
    while (top > 0) {
        d++;
        top >>= 1;
    }
    return d;
}

/* One pass over the mask, encoding (enc != NULL) or decoding into mask. */
static void mask_pass(RangeEnc *enc, RangeDec *dec, uint8_t *mask, long long rows, long long cols, long long h,
                      long long w, Prob *probs, uint32_t *colcount)
{
    for (long long i = 0; i < rows; i++) {
        uint64_t rowcount = 0;
        long long x = 0, y = 0;
        uint8_t *m = mask + i * cols;
        for (long long j = 0; j < cols; j++) {
            int left = x > 0 ? m[j - 1] : 0;
            int up = y > 0 ? m[j - w] : 0;
            int ctx = left + 2 * up + 4 * ctx_bucket(colcount[j], (uint64_t)i, TH_COL, 6) +
                      28 * ctx_bucket(rowcount, (uint64_t)j, TH_ROW, 3);
            int bit;
            if (enc) {
                bit = m[j] != 0;
                enc_bit(enc, &probs[ctx], bit);
            } else {
                bit = dec_bit(dec, &probs[ctx]);
                m[j] = (uint8_t)bit;
            }
            colcount[j] += (uint32_t)bit;
            rowcount += (uint64_t)bit;
            if (++x == w) {
                x = 0;
                if (++y == h)
                    y = 0;
            }
        }
    }
}

/* One pass over the kept values in row-major order (the rows from the mask). */
static void value_pass(RangeEnc *enc, RangeDec *dec, const uint8_t *mask, uint16_t *vals, long long rows,
                       long long cols, long long k, long long z, Prob *probs, int depth)
{
    long long n = 0;
    for (long long i = 0; i < rows; i++) {
        int prev = -1;
        const uint8_t *m = mask + i * cols;
        for (long long j = 0; j < cols; j++) {
            if (!m[j])
                continue;
            long long v = enc ? vals[n] : 0;
            int s;
            if (z == 0)
                s = 1;
            else if (z == k)
                s = 0;
            else if (enc) {
                s = v >= z;
                enc_bit(enc, &probs[prev + 1], s);
            } else
                s = dec_bit(dec, &probs[prev + 1]);
            long long side = s ? k - z : z, mag = enc ? (s ? v - z : z - 1 - v) : 0, got = 0;
            long long node = 1;
            Prob *tree = probs + 3 + ((size_t)s << depth);
            for (int b = depth - 1; b >= 0; b--) {
                int bit = 0;
                if ((got | (1LL << b)) < side) {
                    if (enc) {
                        bit = (int)((mag >> b) & 1);
                        enc_bit(enc, &tree[node], bit);
                    } else
                        bit = dec_bit(dec, &tree[node]);
                }
                got |= (long long)bit << b;
                node = 2 * node + bit;
            }
            if (!enc)
                vals[n] = (uint16_t)(s ? z + got : z - 1 - got);
            prev = s;
            n++;
        }
    }
}

/* The adaptive models of one tensor (mask contexts, value-tree contexts for a tree of ``depth``)
   and the running keep count of each of its ``cols`` columns; -1 with MemoryError set on failure
   (the caller frees whatever was allocated). */
static int ctx_tables(int depth, long long cols, Prob **mp, Prob **vp, uint32_t **colcount)
{
    *mp = new_probs(CTX_MASK_CONTEXTS);
    *vp = new_probs(3 + ((size_t)2 << depth));
    *colcount = (uint32_t *)calloc((size_t)(cols ? cols : 1), sizeof(uint32_t));
    if (!*mp || !*vp || !*colcount) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *ctx_encode(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer maskb, valsb;
    long long rows, cols, h, w, k, z;
    if (!PyArg_ParseTuple(args, "y*y*LLLLLL", &maskb, &valsb, &rows, &cols, &h, &w, &k, &z))
        return NULL;
    PyObject *result = NULL, *a = NULL, *b = NULL;
    Prob *mp = NULL, *vp = NULL;
    uint32_t *colcount = NULL;
    RangeEnc me = {0, 0xFFFFFFFFu, 0, 1, NULL, 0, 0, 0, 0}, ve = {0, 0xFFFFFFFFu, 0, 1, NULL, 0, 0, 0, 0};
    if (rows < 0 || cols < 0 || h < 1 || w < 1 || (cols && cols % (h * w)) || k < 0 || k > 65535 || z < 0 ||
        z > k || maskb.len != rows * cols || valsb.len % 2) {
        PyErr_SetString(PyExc_ValueError, "ctx_encode: invalid shape, grid, codebook or buffers");
        goto done;
    }
    int depth = ctx_depth(k, z);
    if (ctx_tables(depth, cols, &mp, &vp, &colcount) < 0)
        goto done;
    long long nnz = 0;
    const uint8_t *mask = (const uint8_t *)maskb.buf;
    const uint16_t *vals = (const uint16_t *)valsb.buf;
    for (Py_ssize_t i = 0; i < maskb.len; i++)
        nnz += mask[i] != 0;
    if (nnz != valsb.len / 2) {
        PyErr_SetString(PyExc_ValueError, "ctx_encode: one value per kept weight expected");
        goto done;
    }
    for (long long i = 0; i < nnz; i++)
        if (vals[i] >= k) {
            PyErr_SetString(PyExc_ValueError, "ctx_encode: a value is not below k");
            goto done;
        }
    Py_BEGIN_ALLOW_THREADS
    mask_pass(&me, NULL, (uint8_t *)mask, rows, cols, h, w, mp, colcount);
    value_pass(&ve, NULL, mask, (uint16_t *)vals, rows, cols, k, z, vp, depth);
    Py_END_ALLOW_THREADS
    a = enc_finish(&me);
    b = a ? enc_finish(&ve) : NULL;
    if (a && b)
        result = PyTuple_Pack(2, a, b);
done:
    Py_XDECREF(a);
    Py_XDECREF(b);
    free(me.buf);
    free(ve.buf);
    free(mp);
    free(vp);
    free(colcount);
    PyBuffer_Release(&maskb);
    PyBuffer_Release(&valsb);
    return result;
}

static PyObject *ctx_decode(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer mb, vb, outm, outv;
    long long rows, cols, h, w, k, z, nnz;
    if (!PyArg_ParseTuple(args, "y*y*LLLLLLLw*w*", &mb, &vb, &rows, &cols, &h, &w, &k, &z, &nnz, &outm, &outv))
        return NULL;
    PyObject *result = NULL;
    Prob *mp = NULL, *vp = NULL;
    uint32_t *colcount = NULL;
    if (rows < 0 || cols < 0 || h < 1 || w < 1 || (cols && cols % (h * w)) || k < 0 || k > 65535 || z < 0 ||
        z > k || nnz < 0 || outm.len != rows * cols || outv.len != 2 * nnz || (nnz && !k)) {
        PyErr_SetString(PyExc_ValueError, "ctx_decode: invalid shape, grid, codebook, count or buffers");
        goto done;
    }
    int depth = ctx_depth(k, z);
    if (ctx_tables(depth, cols, &mp, &vp, &colcount) < 0)
        goto done;
    int status = 0;
    uint8_t *mask = (uint8_t *)outm.buf;
    Py_BEGIN_ALLOW_THREADS
    RangeDec d;
    dec_init(&d, (const uint8_t *)mb.buf, mb.len);
    mask_pass(NULL, &d, mask, rows, cols, h, w, mp, colcount);
    int bad = dec_check(&d);
    if (bad)
        status = 4 + bad;
    else {
        long long kept = 0;
        for (Py_ssize_t i = 0; i < outm.len; i++)
            kept += mask[i];
        if (kept != nnz)
            status = 13;
    }
    if (!status) {
        dec_init(&d, (const uint8_t *)vb.buf, vb.len);
        value_pass(NULL, &d, mask, (uint16_t *)outv.buf, rows, cols, k, z, vp, depth);
        bad = dec_check(&d);
        if (bad)
            status = 8 + bad;
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromLong(status);
done:
    free(mp);
    free(vp);
    free(colcount);
    PyBuffer_Release(&mb);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&outm);
    PyBuffer_Release(&outv);
    return result;
}

static PyMethodDef methods[] = {
    {"prefix_decode", prefix_decode, METH_VARARGS, "Table decoding of a prefix code (see the module source)."},
    {"ans_decode", ans_decode, METH_VARARGS, "Decode a constriction ANS stream (see the module source)."},
    {"ctx_encode", ctx_encode, METH_VARARGS, "Context-adaptive coding of a mask and its values (see the module source)."},
    {"ctx_decode", ctx_decode, METH_VARARGS, "Decode what ctx_encode wrote (see the module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastcode", "Compiled decoders of deepshrink.coding.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastcode(void) { return PyModule_Create(&module); }
