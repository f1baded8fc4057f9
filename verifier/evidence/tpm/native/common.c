/* The tables and helpers every part of the C IMA module uses. */
#include "ima_native.h"

const struct wg_alg WG_ALGS[ALG_COUNT] = {
    {"sha1", 20}, {"sha256", 32}, {"sha384", 48}, {"sha512", 64},
};

static const char *const FIELD_NAMES[F_COUNT] = {
    "index", "pcr", "template_hash", "template_name", "template_data", "digest_alg",
    "digest", "name", "signature", "buffer", "offset",
};

const char *const WG_TEMPLATE_NAMES[T_COUNT] = {"ima-ng", "ima-sig", "ima-buf"};
const size_t WG_TEMPLATE_LENGTHS[T_COUNT] = {6, 7, 7};

#define ALG(name, size) {name, sizeof name - 1, size}
const struct wg_d_ng_alg WG_D_NG_ALGS[D_NG_ALG_COUNT] = {
    ALG("sha256", 32), ALG("sha1", 20), ALG("sha384", 48), ALG("sha512", 64),
    ALG("md5", 16), ALG("rmd160", 20), ALG("sha224", 28), ALG("sm3", 32),
    ALG("streebog256", 32), ALG("streebog512", 64), ALG("sha3-256", 32),
    ALG("sha3-384", 48), ALG("sha3-512", 64),
};
#undef ALG

/* out = H(a || b); b may be empty. */
#define HASH2_CASE(id, ctx_type, init, update, final)                                \
    case id: {                                                                         \
        ctx_type c;                                                                    \
        init(&c);                                                                      \
        update(&c, a, a_len);                                                          \
        update(&c, b, b_len);                                                          \
        final(out, &c);                                                                \
        break;                                                                         \
    }
void
wg_hash2(enum alg_id alg, const void *a, size_t a_len, const void *b, size_t b_len,
      unsigned char *out)
{
    switch (alg) {
        HASH2_CASE(ALG_SHA1, SHA_CTX, SHA1_Init, SHA1_Update, SHA1_Final)
        HASH2_CASE(ALG_SHA256, SHA256_CTX, SHA256_Init, SHA256_Update, SHA256_Final)
        HASH2_CASE(ALG_SHA384, SHA512_CTX, SHA384_Init, SHA384_Update, SHA384_Final)
    default:
        HASH2_CASE(ALG_SHA512, SHA512_CTX, SHA512_Init, SHA512_Update, SHA512_Final)
    }
}
#undef HASH2_CASE

int
wg_alg_from_name(PyObject *name, enum alg_id *out)
{
    const char *text = PyUnicode_AsUTF8(name);
    if (text == NULL)
        return -1;
    for (int i = 0; i < ALG_COUNT; i++) {
        if (strcmp(text, WG_ALGS[i].name) == 0) {
            *out = (enum alg_id)i;
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "hash %R is not native", name);
    return -1;
}

int
wg_all_zero(const char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Stop the collector tracking a full tuple of objects it does not track (bytes,
 * untracked entries): it cannot be part of a cycle, and walking its thousands of
 * items at every collection is what the untracking saves. CPython untracks such
 * tuples itself, but only once a collection has walked them. */
void
wg_untrack(PyObject *tuple)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (item == NULL || (PyObject_IS_GC(item) && PyObject_GC_IsTracked(item)))
            return;
    }
    if (PyObject_GC_IsTracked(tuple))
        PyObject_GC_UnTrack(tuple);
}

/* A tuple of seq's items (a list or a tuple) that no other code can change.
 * PyList_AsTuple is not used: on 3.11 its allocation can run a collection whose
 * finalisers change the list it is copying from. */
PyObject *
wg_own_tuple(PyObject *seq)
{
    if (PyTuple_CheckExact(seq))
        return Py_NewRef(seq);
    if (!PyList_CheckExact(seq)) {
        PyErr_SetString(PyExc_TypeError, "expected a list or a tuple");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(seq);
    PyObject *copy = PyTuple_New(n); /* may run finalisers */
    if (copy == NULL)
        return NULL;
    if (PyList_GET_SIZE(seq) != n) {
        Py_DECREF(copy);
        PyErr_SetString(PyExc_RuntimeError, "the list changed during the call");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) /* nothing here allocates */
        PyTuple_SET_ITEM(copy, i, Py_NewRef(PyList_GET_ITEM(seq, i)));
    return copy;
}

signed char WG_HEX[256];

/* Two lowercase hex digits (first << 8 | second) -> their byte, or 0x100 when
 * either is not one: one load per byte decoded (128 KiB, built at import). */
static uint16_t WG_HEX_PAIR[1 << 16];

/* Decode exactly 2*n lowercase hex digits; 0 when one is not. */
int
wg_unhex(const char *text, Py_ssize_t n, unsigned char *out)
{
    const unsigned char *t = (const unsigned char *)text;
    unsigned bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned pair = WG_HEX_PAIR[(unsigned)t[2 * i] << 8 | t[2 * i + 1]];
        bad |= pair;
        out[i] = (unsigned char)pair;
    }
    return (bad & 0x100) == 0;
}

/* Where each ImaEntry slot lives, read from the type's member descriptors.
 * Entries are made with tp_alloc and their slots written directly, skipping any
 * constructor, so only a plain class of exactly these eleven object slots, straight
 * from object, is taken (ImaEntry: a frozen slotted dataclass). */
int
wg_slot_offsets(PyTypeObject *type, Py_ssize_t offsets[F_COUNT])
{
    return wg_object_slots(type, FIELD_NAMES, F_COUNT, offsets);
}

void
wg_shared_clear(struct shared *s)
{
    for (int i = 0; i < T_COUNT; i++)
        Py_CLEAR(s->templates[i]);
    for (int i = 0; i < D_NG_ALG_COUNT; i++)
        Py_CLEAR(s->algs[i]);
}

/* An ImaEntry holding values (stolen, in field order), or NULL with an exception
 * set when any value is NULL (its creation failed) or the allocation fails. */
static PyObject *
entry_from(PyTypeObject *type, const Py_ssize_t offsets[F_COUNT], PyObject *values[F_COUNT])
{
    PyObject *entry = wg_object_from(type, offsets, F_COUNT, values);
    /* Its fields are ints, bytes, str and None: it cannot be part of a reference
     * cycle, so the collector need not track it (as CPython does for such tuples);
     * this keeps a large list out of every collection. */
    if (entry != NULL && PyObject_IS_GC(entry))
        PyObject_GC_UnTrack(entry);
    return entry;
}

/* The shared str of template t and of d-ng algorithm a (made once per call). */
static int
shared_names(struct shared *shared, int t, int a)
{
    if (shared->templates[t] == NULL &&
        (shared->templates[t] = PyUnicode_InternFromString(WG_TEMPLATE_NAMES[t])) == NULL)
        return -1;
    if (shared->algs[a] == NULL &&
        (shared->algs[a] = PyUnicode_InternFromString(WG_D_NG_ALGS[a].name)) == NULL)
        return -1;
    return 0;
}

/* An ImaEntry from the fields either parser found, or NULL with an exception set.
 * data (template data) and extra (ima-sig's signature or ima-buf's buffer; NULL for
 * ima-ng) are new references, or NULL where making them failed: both are stolen. */
PyObject *
wg_make_entry(PyTypeObject *type, const Py_ssize_t offsets[F_COUNT], struct shared *shared,
           int t, int alg, int pcr, Py_ssize_t index, Py_ssize_t offset, const char *hash,
           Py_ssize_t hash_size, const char *digest, const char *name, Py_ssize_t name_len,
           PyObject *data, PyObject *extra)
{
    if (shared_names(shared, t, alg) < 0) {
        Py_XDECREF(data);
        Py_XDECREF(extra);
        return NULL;
    }
    PyObject *values[F_COUNT] = {NULL};
    values[F_TEMPLATE] = Py_NewRef(shared->templates[t]);
    values[F_ALG] = Py_NewRef(shared->algs[alg]);
    values[F_DATA] = data;
    values[F_SIG] = t == T_SIG ? extra : Py_NewRef(Py_None);
    values[F_BUF] = t == T_BUF ? extra : Py_NewRef(Py_None);
    /* The others are made only while nothing has failed (a NULL data or extra is the
     * caller's failure), so that no call runs with an exception set; entry_from
     * releases what was made when one is missing. */
    if (values[F_DATA] != NULL && values[F_SIG] != NULL && values[F_BUF] != NULL &&
        (values[F_INDEX] = PyLong_FromSsize_t(index)) != NULL &&
        (values[F_PCR] = PyLong_FromLong(pcr)) != NULL &&
        (values[F_HASH] = PyBytes_FromStringAndSize(hash, hash_size)) != NULL &&
        (values[F_DIGEST] = PyBytes_FromStringAndSize(digest, WG_D_NG_ALGS[alg].size)) !=
            NULL &&
        (values[F_NAME] = PyUnicode_DecodeUTF8(name, name_len, "surrogateescape")) != NULL)
        values[F_OFFSET] = PyLong_FromSsize_t(offset);
    return entry_from(type, offsets, values);
}


void
wg_init_tables(void)
{
    memset(WG_HEX, -1, sizeof WG_HEX);
    for (int d = 0; d < 10; d++)
        WG_HEX['0' + d] = (signed char)d;
    for (int d = 0; d < 6; d++)
        WG_HEX['a' + d] = (signed char)(10 + d);
    for (unsigned first = 0; first < 256; first++)
        for (unsigned second = 0; second < 256; second++)
            WG_HEX_PAIR[first << 8 | second] =
                WG_HEX[first] < 0 || WG_HEX[second] < 0
                    ? 0x100
                    : (uint16_t)((unsigned)WG_HEX[first] << 4 | (unsigned)WG_HEX[second]);
}


/* What both list parsers check of their arguments before reading a byte: the
 * template-hash size, and the entry class's slots (wg_slot_offsets). */
int
wg_entry_layout(PyTypeObject *type, Py_ssize_t hash_size, Py_ssize_t offsets[F_COUNT])
{
    if (hash_size <= 0 || hash_size > MAX_DIGEST) {
        PyErr_SetString(PyExc_ValueError, "hash_size out of range");
        return -1;
    }
    return wg_slot_offsets(type, offsets);
}
