/*
 * The IMA hot path in C: the binary or ASCII list parsed into entries, template
 * hashes checked, PCR 10 replayed, entries the policy plainly allows picked out.  Python (ima_native.py) is the only caller.
 *
 * Why C: a full check of a 2,000-entry list is three hashes and a dozen small
 * objects per entry; through CPython each hash call costs more than the hash.
 *
 * Safety rules this file keeps:
 *   - It never reports an error about the evidence.  An entry it does not fully
 *     understand makes ascii_entries() or binary_entries() return None, and the
 *     Python parser (the reference: ima_ascii.py, ima_binary.py) parses the whole
 *     list again and names the fault.
 *     So this code can only be wrong by accepting a line Python rejects or by
 *     building a different entry; tests/unit/test_ima_native.py and the atheris
 *     harness tests/fuzz/fuzz_ima_native.py compare the two on every input.
 *   - Every read is bounded by the line's end, found with memchr before any
 *     field is read; no length comes from the input except through those bounds.
 *   - What it walks it owns: any allocation can start a collection and so run
 *     Python finalisers (or a lookup can run __hash__/__eq__), which could change
 *     a list it was given or an entry's slots; inputs are copied into a tuple of
 *     its own first, and a field is held by a reference of its own before the
 *     next such call.
 *   - It takes only ImaEntry's exact layout (slot_offsets) and only exact
 *     bytes/int/str where it reads their internals.
 *   - Collections: the loops that make an object or two per entry (20,000 entries
 *     make 28 collections, each walking every young object, and older generations
 *     in turn) pause the cyclic collector with PyGC_Disable, the C API made for
 *     this, and restore it on every way out. What they make cannot form cycles
 *     (entries hold ints, bytes and str and are untracked at birth), so nothing
 *     is lost; the collector runs at its next allocation afterwards.
 *   - Hashing uses OpenSSL's libcrypto.  The one-shot SHA*_Init/Update/Final
 *     functions are used instead of EVP because EVP's per-call setup costs as
 *     much as hashing a 100-byte template (bench/tpm_verify.py).
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <structmember.h>
#include <openssl/sha.h>
#include <string.h>

/* ------------------------------------------------------------------ hashing */

enum alg_id { ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512, ALG_COUNT };

static const struct {
    const char *name; /* TPM bank name, as ima_replay names banks */
    Py_ssize_t size;
} ALGS[ALG_COUNT] = {
    {"sha1", 20}, {"sha256", 32}, {"sha384", 48}, {"sha512", 64},
};

#define MAX_DIGEST 64

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
static void
hash2(enum alg_id alg, const void *a, size_t a_len, const void *b, size_t b_len,
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

static int
alg_from_name(PyObject *name, enum alg_id *out)
{
    const char *text = PyUnicode_AsUTF8(name);
    if (text == NULL)
        return -1;
    for (int i = 0; i < ALG_COUNT; i++) {
        if (strcmp(text, ALGS[i].name) == 0) {
            *out = (enum alg_id)i;
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "hash %R is not native", name);
    return -1;
}

/* 0 when every item of the tuple is bytes, else -1 with TypeError. */
static int
check_bytes(PyObject *tuple, const char *what)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(tuple, i))) {
            PyErr_Format(PyExc_TypeError, "%s[%zd] is not bytes", what, i);
            return -1;
        }
    }
    return 0;
}

static int
all_zero(const char *p, Py_ssize_t n)
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
static void
untrack(PyObject *tuple)
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
static PyObject *
own_tuple(PyObject *seq)
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

PyDoc_STRVAR(extend_doc,
"extend(alg, value, items, hashed, violations, target) -> (bytes, list[int])\n\n"
"Extend value with one measurement per item: ff..ff at the (ascending)\n"
"violation positions, else alg(item) when hashed, else the item itself;\n"
"PCR = alg(PCR || measurement). Returns the final value and the counts of\n"
"items after which the value equals target (none when target is None).");

static PyObject *
extend(PyObject *module, PyObject *args)
{
    PyObject *alg_name, *items, *violation_list, *target;
    Py_buffer value;
    int hashed;
    enum alg_id alg;
    if (!PyArg_ParseTuple(args, "Uy*OpOO:extend", &alg_name, &value, &items, &hashed,
                          &violation_list, &target))
        return NULL;
    PyObject *out = NULL, *matches = NULL, *snapshot = NULL;
    Py_ssize_t *marks = NULL;
    if (alg_from_name(alg_name, &alg) < 0)
        goto done;
    /* A tuple of its own to walk (an allocation below can run a finaliser that changes
     * the list); bytes cannot change. */
    snapshot = own_tuple(items);
    if (snapshot == NULL || check_bytes(snapshot, "items") < 0)
        goto done;
    Py_ssize_t size = ALGS[alg].size;
    if (value.len != size) {
        PyErr_SetString(PyExc_ValueError, "value is not a digest of alg");
        goto done;
    }
    if (target != Py_None && (!PyBytes_Check(target) || PyBytes_GET_SIZE(target) != size)) {
        PyErr_SetString(PyExc_ValueError, "target is not None or a digest of alg");
        goto done;
    }
    if (!PyTuple_Check(violation_list)) {
        PyErr_SetString(PyExc_TypeError, "violations must be a tuple");
        goto done;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(snapshot), marked = PyTuple_GET_SIZE(violation_list);
    marks = PyMem_New(Py_ssize_t, marked > 0 ? marked : 1);
    if (marks == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < marked; i++) {
        /* Exact ints only: an __index__ method could run Python code that changes items. */
        PyObject *mark = PyTuple_GET_ITEM(violation_list, i);
        marks[i] = PyLong_CheckExact(mark) ? PyLong_AsSsize_t(mark) : -1;
        if (PyErr_Occurred())
            PyErr_Clear();
        if (marks[i] < 0 || marks[i] >= n || (i > 0 && marks[i] <= marks[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "violations must ascend within the items");
            goto done;
        }
    }
    matches = PyList_New(0);
    if (matches == NULL)
        goto done;
    unsigned char pcr[MAX_DIGEST], measured[MAX_DIGEST], ff[MAX_DIGEST];
    memcpy(pcr, value.buf, (size_t)size);
    memset(ff, 0xff, sizeof ff);
    const unsigned char *want = target == Py_None ? NULL : (const unsigned char *)PyBytes_AS_STRING(target);
    Py_ssize_t next = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(snapshot, i);
        if (next < marked && marks[next] == i) {
            next++;
            hash2(alg, pcr, (size_t)size, ff, (size_t)size, pcr);
        } else if (hashed) {
            hash2(alg, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item), "", 0, measured);
            hash2(alg, pcr, (size_t)size, measured, (size_t)size, pcr);
        } else {
            hash2(alg, pcr, (size_t)size, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item), pcr);
        }
        if (want != NULL && memcmp(pcr, want, (size_t)size) == 0) {
            PyObject *count = PyLong_FromSsize_t(i + 1);
            if (count == NULL || PyList_Append(matches, count) < 0) {
                Py_XDECREF(count);
                goto done;
            }
            Py_DECREF(count);
        }
    }
    out = Py_BuildValue("(y#O)", (const char *)pcr, size, matches);
done:
    Py_XDECREF(matches);
    Py_XDECREF(snapshot);
    PyMem_Free(marks);
    PyBuffer_Release(&value);
    return out;
}

/* ------------------------------------------------------------- ASCII lists */

/* ImaEntry's fields, in the order ImaEntry declares them. */
enum field { F_INDEX, F_PCR, F_HASH, F_TEMPLATE, F_DATA, F_ALG, F_DIGEST, F_NAME, F_SIG,
             F_BUF, F_OFFSET, F_COUNT };
static const char *const FIELD_NAMES[F_COUNT] = {
    "index", "pcr", "template_hash", "template_name", "template_data", "digest_alg",
    "digest", "name", "signature", "buffer", "offset",
};

enum template_id { T_NG, T_SIG, T_BUF, T_COUNT };
static const char *const TEMPLATE_NAMES[T_COUNT] = {"ima-ng", "ima-sig", "ima-buf"};
static const size_t TEMPLATE_LENGTHS[T_COUNT] = {6, 7, 7};

/* Kernel hash names a d-ng digest can carry, with their sizes (ima.HASH_SIZES). */
#define D_NG_ALG_COUNT 13
#define ALG(name, size) {name, sizeof name - 1, size}
static const struct {
    const char *name;
    size_t length;
    Py_ssize_t size;
} D_NG_ALGS[D_NG_ALG_COUNT] = {
    ALG("sha256", 32), ALG("sha1", 20), ALG("sha384", 48), ALG("sha512", 64),
    ALG("md5", 16), ALG("rmd160", 20), ALG("sha224", 28), ALG("sm3", 32),
    ALG("streebog256", 32), ALG("streebog512", 64), ALG("sha3-256", 32),
    ALG("sha3-384", 48), ALG("sha3-512", 64),
};
#undef ALG

static signed char HEX[256]; /* lowercase hex digit -> value, else -1 */

/* Two lowercase hex digits (first << 8 | second) -> their byte, or 0x100 when
 * either is not one: one load per byte decoded (128 KiB, built at import). */
static uint16_t HEX_PAIR[1 << 16];

/* Decode exactly 2*n lowercase hex digits; 0 when one is not. */
static int
unhex(const char *text, Py_ssize_t n, unsigned char *out)
{
    const unsigned char *t = (const unsigned char *)text;
    unsigned bad = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned pair = HEX_PAIR[(unsigned)t[2 * i] << 8 | t[2 * i + 1]];
        bad |= pair;
        out[i] = (unsigned char)pair;
    }
    return (bad & 0x100) == 0;
}

static void
put_u32(char *at, Py_ssize_t value, int little)
{
    uint32_t v = (uint32_t)value;
    for (int i = 0; i < 4; i++)
        at[little ? i : 3 - i] = (char)(v >> (8 * i) & 0xff);
}

/* Where each ImaEntry slot lives, read from the type's member descriptors.
 * Entries are made with tp_alloc and their slots written directly, skipping any
 * constructor, so only a plain class of exactly these eleven object slots, straight
 * from object, is taken (ImaEntry: a frozen slotted dataclass). */
static int
slot_offsets(PyTypeObject *type, Py_ssize_t offsets[F_COUNT])
{
    if (!Py_IS_TYPE(type, &PyType_Type) || type->tp_base != &PyBaseObject_Type ||
        type->tp_itemsize != 0 ||
        type->tp_dictoffset != 0 || type->tp_weaklistoffset != 0 ||
        type->tp_alloc != PyType_GenericAlloc ||
        type->tp_basicsize != (Py_ssize_t)(sizeof(PyObject) + F_COUNT * sizeof(PyObject *))) {
        PyErr_Format(PyExc_TypeError, "%s is not a plain class of %d slots", type->tp_name,
                     F_COUNT);
        return -1;
    }
    for (int f = 0; f < F_COUNT; f++) {
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, FIELD_NAMES[f]);
        if (descr == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s has no field %s", type->tp_name,
                             FIELD_NAMES[f]);
            }
            return -1;
        }
        int is_member = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                        ((PyMemberDescrObject *)descr)->d_common.d_type == type;
        PyMemberDef *member = is_member ? ((PyMemberDescrObject *)descr)->d_member : NULL;
        Py_DECREF(descr); /* the type keeps it alive */
        if (member == NULL || member->type != T_OBJECT_EX || (member->flags & READONLY) ||
            member->offset < (Py_ssize_t)sizeof(PyObject) ||
            member->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot of its own",
                         type->tp_name, FIELD_NAMES[f]);
            return -1;
        }
        for (int g = 0; g < f; g++) {
            if (offsets[g] == member->offset) {
                PyErr_Format(PyExc_TypeError, "%s.%s shares a slot", type->tp_name,
                             FIELD_NAMES[f]);
                return -1;
            }
        }
        offsets[f] = member->offset;
    }
    return 0;
}

/* One parsed line: pointers into the list, bounded by the line. */
struct line {
    int pcr;
    enum template_id template;
    int alg; /* index into D_NG_ALGS */
    unsigned char hash[MAX_DIGEST];
    unsigned char digest[MAX_DIGEST];
    const char *name;
    Py_ssize_t name_len;
    const char *extra_hex; /* ima-sig / ima-buf: the hex after the last space */
    Py_ssize_t extra_len;  /* bytes, i.e. half the hex digits */
};

/* Parse [start, end) (no newline) into *out; 0 when the line is not of a form
 * this file accepts (the Python parser decides then). */
static int
parse_line(const char *start, const char *end, Py_ssize_t hash_size, struct line *out)
{
    const char *p = start;
    /* "%2d ": " 9 " or "10 ", PCR 0-23, never a leading zero. */
    if (end - p < 3 || p[2] != ' ')
        return 0;
    if (p[0] == ' ' && p[1] >= '0' && p[1] <= '9')
        out->pcr = p[1] - '0';
    else if (p[0] >= '1' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9')
        out->pcr = (p[0] - '0') * 10 + (p[1] - '0');
    else
        return 0;
    if (out->pcr > 23)
        return 0;
    p += 3;
    /* Template hash: lowercase hex of the template-hash size, then a space. */
    if (end - p < 2 * hash_size + 1 || p[2 * hash_size] != ' ' ||
        !unhex(p, hash_size, out->hash))
        return 0;
    p += 2 * hash_size + 1;
    /* Template name, then a space. */
    const char *space = memchr(p, ' ', (size_t)(end - p));
    if (space == NULL)
        return 0;
    int template = -1;
    for (int t = 0; t < T_COUNT && template < 0; t++) {
        size_t len = TEMPLATE_LENGTHS[t];
        if ((size_t)(space - p) == len && memcmp(p, TEMPLATE_NAMES[t], len) == 0)
            template = t;
    }
    if (template < 0)
        return 0;
    out->template = (enum template_id)template;
    p = space + 1;
    /* d-ng: "alg:" and lowercase hex of that algorithm's size, then a space. */
    space = memchr(p, ' ', (size_t)(end - p));
    if (space == NULL)
        return 0;
    const char *colon = memchr(p, ':', (size_t)(space - p));
    if (colon == NULL)
        return 0;
    out->alg = -1;
    for (int a = 0; a < D_NG_ALG_COUNT && out->alg < 0; a++) {
        size_t len = D_NG_ALGS[a].length;
        if ((size_t)(colon - p) == len && memcmp(p, D_NG_ALGS[a].name, len) == 0)
            out->alg = a;
    }
    if (out->alg < 0)
        return 0;
    Py_ssize_t digest_size = D_NG_ALGS[out->alg].size;
    if (space - (colon + 1) != 2 * digest_size || !unhex(colon + 1, digest_size, out->digest))
        return 0;
    p = space + 1;
    /* The name: the rest of the line (ima-ng), or up to the last space, after
     * which comes the signature or buffer as lowercase hex of even length. */
    out->name = p;
    out->name_len = end - p;
    out->extra_hex = NULL;
    out->extra_len = 0;
    if (out->template != T_NG) {
        const char *last = p;
        const char *found = NULL;
        while ((last = memchr(last, ' ', (size_t)(end - last))) != NULL)
            found = last++;
        if (found == NULL)
            return 0;
        Py_ssize_t digits = end - (found + 1);
        if (digits % 2)
            return 0;
        for (Py_ssize_t i = 0; i < digits; i++)
            if (HEX[(unsigned char)found[1 + i]] < 0)
                return 0;
        out->name_len = found - p;
        out->extra_hex = found + 1;
        out->extra_len = digits / 2;
    }
    if (memchr(out->name, '\0', (size_t)out->name_len) != NULL)
        return 0;
    return 1;
}

/* The template data the kernel hashes for *line (ima_layout.template_data). */
static PyObject *
template_data(const struct line *line, int little)
{
    const char *alg = D_NG_ALGS[line->alg].name;
    Py_ssize_t alg_len = (Py_ssize_t)D_NG_ALGS[line->alg].length, digest_size = D_NG_ALGS[line->alg].size;
    Py_ssize_t d_ng = alg_len + 2 + digest_size, n_ng = line->name_len + 1;
    Py_ssize_t total = 4 + d_ng + 4 + n_ng;
    if (line->template != T_NG)
        total += 4 + line->extra_len;
    PyObject *data = PyBytes_FromStringAndSize(NULL, total);
    if (data == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(data);
    put_u32(w, d_ng, little);
    memcpy(w + 4, alg, (size_t)alg_len);
    w += 4 + alg_len;
    *w++ = ':';
    *w++ = '\0';
    memcpy(w, line->digest, (size_t)digest_size);
    w += digest_size;
    put_u32(w, n_ng, little);
    memcpy(w + 4, line->name, (size_t)line->name_len);
    w += 4 + line->name_len;
    *w++ = '\0';
    if (line->template != T_NG) {
        put_u32(w, line->extra_len, little);
        /* Checked hex digits (parse_line): decoding cannot fail. */
        unhex(line->extra_hex, line->extra_len, (unsigned char *)w + 4);
    }
    return data;
}

struct shared {
    PyObject *templates[T_COUNT];
    PyObject *algs[D_NG_ALG_COUNT];
};

static void
shared_clear(struct shared *s)
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
    PyObject *entry = NULL;
    for (int f = 0; f < F_COUNT; f++)
        if (values[f] == NULL)
            goto fail;
    entry = type->tp_alloc(type, 0);
    if (entry == NULL)
        goto fail;
    for (int f = 0; f < F_COUNT; f++)
        *(PyObject **)((char *)entry + offsets[f]) = values[f]; /* steals each */
    /* Its fields are ints, bytes, str and None: it cannot be part of a reference
     * cycle, so the collector need not track it (as CPython does for such tuples);
     * this keeps a large list out of every collection. */
    if (PyObject_IS_GC(entry))
        PyObject_GC_UnTrack(entry);
    return entry;
fail:
    for (int f = 0; f < F_COUNT; f++)
        Py_XDECREF(values[f]);
    return NULL;
}

/* The shared str of template t and of d-ng algorithm a (made once per call). */
static int
shared_names(struct shared *shared, int t, int a)
{
    if (shared->templates[t] == NULL &&
        (shared->templates[t] = PyUnicode_InternFromString(TEMPLATE_NAMES[t])) == NULL)
        return -1;
    if (shared->algs[a] == NULL &&
        (shared->algs[a] = PyUnicode_InternFromString(D_NG_ALGS[a].name)) == NULL)
        return -1;
    return 0;
}

/* An ImaEntry from the fields either parser found, or NULL with an exception set.
 * data (template data) and extra (ima-sig's signature or ima-buf's buffer; NULL for
 * ima-ng) are new references, or NULL where making them failed: both are stolen. */
static PyObject *
make_entry(PyTypeObject *type, const Py_ssize_t offsets[F_COUNT], struct shared *shared,
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
    values[F_INDEX] = PyLong_FromSsize_t(index);
    values[F_PCR] = PyLong_FromLong(pcr);
    values[F_HASH] = PyBytes_FromStringAndSize(hash, hash_size);
    values[F_TEMPLATE] = Py_NewRef(shared->templates[t]);
    values[F_DATA] = data;
    values[F_ALG] = Py_NewRef(shared->algs[alg]);
    values[F_DIGEST] = PyBytes_FromStringAndSize(digest, D_NG_ALGS[alg].size);
    values[F_NAME] = PyUnicode_DecodeUTF8(name, name_len, "surrogateescape");
    values[F_SIG] = t == T_SIG ? extra : Py_NewRef(Py_None);
    values[F_BUF] = t == T_BUF ? extra : Py_NewRef(Py_None);
    values[F_OFFSET] = PyLong_FromSsize_t(offset);
    return entry_from(type, offsets, values);
}

/* A new ImaEntry for an ASCII *line, or NULL with an exception set. */
static PyObject *
new_entry(PyTypeObject *type, const Py_ssize_t offsets[F_COUNT], struct shared *shared,
          const struct line *line, Py_ssize_t index, Py_ssize_t offset, Py_ssize_t hash_size,
          int little)
{
    PyObject *extra = NULL;
    if (line->template != T_NG) {
        extra = PyBytes_FromStringAndSize(NULL, line->extra_len);
        if (extra != NULL) /* checked hex digits (parse_line): cannot fail */
            unhex(line->extra_hex, line->extra_len, (unsigned char *)PyBytes_AS_STRING(extra));
    }
    return make_entry(type, offsets, shared, line->template, line->alg, line->pcr, index,
                      offset, (const char *)line->hash, hash_size, (const char *)line->digest,
                      line->name, line->name_len, template_data(line, little), extra);
}

PyDoc_STRVAR(ascii_entries_doc,
"ascii_entries(raw, hash_size, first_index, little, max_entries, entry_type)\n"
"    -> tuple[ImaEntry, ...] | None\n\n"
"Every line of an ASCII list as an entry_type, or None unless every line is a\n"
"well-formed ima-ng, ima-sig or ima-buf line with a known d-ng algorithm (and\n"
"there are at most max_entries, and the list ends with a newline).");

static PyObject *
ascii_entries(PyObject *module, PyObject *args)
{
    Py_buffer raw;
    Py_ssize_t hash_size, first_index, max_entries;
    int little;
    PyTypeObject *type;
    if (!PyArg_ParseTuple(args, "y*nnpnO!:ascii_entries", &raw, &hash_size, &first_index,
                          &little, &max_entries, &PyType_Type, &type))
        return NULL;
    PyObject *entries = NULL;
    const char **newlines = NULL;
    int gc_was_enabled = 0;
    struct shared shared = {{NULL}, {NULL}};
    Py_ssize_t offsets[F_COUNT];
    const char *base = raw.buf, *end = base + raw.len;
    if (hash_size <= 0 || hash_size > MAX_DIGEST) {
        PyErr_SetString(PyExc_ValueError, "hash_size out of range");
        goto done;
    }
    if (slot_offsets(type, offsets) < 0)
        goto done;
    /* Field lengths are written as u32: a longer list is the Python parser's (which
     * refuses it long before: ima.MAX_LIST_SIZE). */
    if (raw.len > 0xffffffffLL || (raw.len > 0 && base[raw.len - 1] != '\n')) {
        entries = Py_NewRef(Py_None);
        goto done;
    }
    /* Where each line ends, found once: the count sizes the tuple, the ends bound
     * the lines. The list ends with a newline (checked above), so memchr finds one. */
    Py_ssize_t count = 0, room = 0;
    for (const char *p = base; p < end; count++) {
        if (count >= max_entries) {
            entries = Py_NewRef(Py_None);
            goto done;
        }
        if (count == room) {
            room = room ? 2 * room : 1024;
            const char **grown = PyMem_Realloc(newlines, (size_t)room * sizeof *newlines);
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            newlines = grown;
        }
        newlines[count] = memchr(p, '\n', (size_t)(end - p));
        p = newlines[count] + 1;
    }
    /* Indices the C integers hold (the Python parser takes any others). */
    if (first_index < 0 || first_index > PY_SSIZE_T_MAX - count) {
        entries = Py_NewRef(Py_None);
        goto done;
    }
    entries = PyTuple_New(count);
    if (entries == NULL)
        goto done;
    const char *start = base;
    gc_was_enabled = PyGC_Disable(); /* see "Collections" above */
    for (Py_ssize_t i = 0; i < count; i++) {
        const char *newline = newlines[i];
        struct line line;
        if (!parse_line(start, newline, hash_size, &line)) {
            Py_SETREF(entries, Py_NewRef(Py_None));
            goto done;
        }
        PyObject *entry = new_entry(type, offsets, &shared, &line, first_index + i,
                                    start - base, hash_size, little);
        if (entry == NULL) {
            Py_CLEAR(entries);
            goto done;
        }
        PyTuple_SET_ITEM(entries, i, entry);
        start = newline + 1;
    }
    untrack(entries);
done:
    if (gc_was_enabled)
        PyGC_Enable();
    PyMem_Free(newlines);
    shared_clear(&shared);
    PyBuffer_Release(&raw);
    return entries;
}

/* ------------------------------------------------------------- binary lists */

static uint32_t
get_u32(const char *at, int little)
{
    const unsigned char *b = (const unsigned char *)at;
    if (little)
        return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return (uint32_t)b[3] | (uint32_t)b[2] << 8 | (uint32_t)b[1] << 16 | (uint32_t)b[0] << 24;
}

/* One binary entry: pointers into the list. */
struct record {
    int pcr;
    enum template_id template;
    int alg; /* index into D_NG_ALGS */
    const char *hash;
    const char *data;
    Py_ssize_t data_len;
    const char *digest;
    const char *name;
    Py_ssize_t name_len;
    const char *extra; /* ima-sig / ima-buf: the third field */
    Py_ssize_t extra_len;
    Py_ssize_t size; /* bytes the entry takes in the list */
};

/* A u32 length at *at (within [*at, end)) and the field it announces; moves *at past
 * both. 0 when either does not fit. */
static int
field(const char **at, const char *end, int little, const char **value, Py_ssize_t *length)
{
    if (end - *at < 4)
        return 0;
    uint32_t size = get_u32(*at, little);
    *at += 4;
    if ((size_t)size > (size_t)(end - *at))
        return 0;
    *value = *at;
    *length = (Py_ssize_t)size;
    *at += size;
    return 1;
}

/* Parse the entry at p (the list ends at end) into *out; 0 when it is not of a form
 * this file accepts (the Python parser decides then). */
static int
parse_record(const char *p, const char *end, Py_ssize_t hash_size, int little,
             Py_ssize_t max_data, struct record *out)
{
    /* PCR (0-23), template hash, template name (one of ours). */
    if (end - p < 4 + hash_size + 4)
        return 0;
    uint32_t pcr = get_u32(p, little);
    if (pcr > 23)
        return 0;
    out->pcr = (int)pcr;
    out->hash = p + 4;
    const char *q = p + 4 + hash_size, *tname;
    Py_ssize_t tname_len;
    if (!field(&q, end, little, &tname, &tname_len))
        return 0;
    int template = -1;
    for (int t = 0; t < T_COUNT && template < 0; t++)
        if ((size_t)tname_len == TEMPLATE_LENGTHS[t] &&
            memcmp(tname, TEMPLATE_NAMES[t], (size_t)tname_len) == 0)
            template = t;
    if (template < 0)
        return 0;
    out->template = (enum template_id)template;
    /* Template data: at most max_data bytes, exactly its fields. */
    if (!field(&q, end, little, &out->data, &out->data_len) || out->data_len > max_data)
        return 0;
    const char *f = out->data, *data_end = out->data + out->data_len, *d_ng, *n_ng;
    Py_ssize_t d_ng_len, n_ng_len;
    if (!field(&f, data_end, little, &d_ng, &d_ng_len) ||
        !field(&f, data_end, little, &n_ng, &n_ng_len))
        return 0;
    /* d-ng: "alg:\0" and a digest of that algorithm's size. A known name holds no
     * ':', so this is the first ":\0", where the Python parser splits. */
    out->alg = -1;
    for (int a = 0; a < D_NG_ALG_COUNT && out->alg < 0; a++) {
        Py_ssize_t len = (Py_ssize_t)D_NG_ALGS[a].length;
        if (d_ng_len == len + 2 + D_NG_ALGS[a].size &&
            memcmp(d_ng, D_NG_ALGS[a].name, (size_t)len) == 0 && d_ng[len] == ':' &&
            d_ng[len + 1] == '\0')
            out->alg = a;
    }
    if (out->alg < 0)
        return 0;
    out->digest = d_ng + D_NG_ALGS[out->alg].length + 2;
    /* n-ng: one name and its NUL, no other NUL. */
    if (n_ng_len < 1 || n_ng[n_ng_len - 1] != '\0' ||
        memchr(n_ng, '\0', (size_t)(n_ng_len - 1)) != NULL)
        return 0;
    out->name = n_ng;
    out->name_len = n_ng_len - 1;
    out->extra = NULL;
    out->extra_len = 0;
    if (out->template != T_NG && !field(&f, data_end, little, &out->extra, &out->extra_len))
        return 0;
    if (f != data_end)
        return 0;
    out->size = data_end - p;
    return 1;
}

static PyObject *
record_entry(PyTypeObject *type, const Py_ssize_t offsets[F_COUNT], struct shared *shared,
             const struct record *r, Py_ssize_t index, Py_ssize_t offset, Py_ssize_t hash_size)
{
    PyObject *extra = r->template == T_NG ? NULL : PyBytes_FromStringAndSize(r->extra, r->extra_len);
    return make_entry(type, offsets, shared, r->template, r->alg, r->pcr, index, offset,
                      r->hash, hash_size, r->digest, r->name, r->name_len,
                      PyBytes_FromStringAndSize(r->data, r->data_len), extra);
}

PyDoc_STRVAR(binary_entries_doc,
"binary_entries(raw, hash_size, first_index, little, max_entries, max_data, entry_type)\n"
"    -> tuple[ImaEntry, ...] | None\n\n"
"Every entry of a non-empty binary list (of the given byte order) as an\n"
"entry_type, or None unless every entry is a well-formed ima-ng, ima-sig or\n"
"ima-buf entry with a known d-ng algorithm and at most max_data bytes of\n"
"template data (and there are at most max_entries).");

static PyObject *
binary_entries(PyObject *module, PyObject *args)
{
    Py_buffer raw;
    Py_ssize_t hash_size, first_index, max_entries, max_data;
    int little;
    PyTypeObject *type;
    if (!PyArg_ParseTuple(args, "y*nnpnnO!:binary_entries", &raw, &hash_size, &first_index,
                          &little, &max_entries, &max_data, &PyType_Type, &type))
        return NULL;
    PyObject *entries = NULL, *found = NULL;
    int gc_was_enabled = 0;
    struct shared shared = {{NULL}, {NULL}};
    Py_ssize_t offsets[F_COUNT];
    const char *base = raw.buf, *end = base + raw.len;
    if (hash_size <= 0 || hash_size > MAX_DIGEST) {
        PyErr_SetString(PyExc_ValueError, "hash_size out of range");
        goto done;
    }
    if (slot_offsets(type, offsets) < 0)
        goto done;
    if (raw.len == 0 || first_index < 0 || max_entries < 0 ||
        first_index > PY_SSIZE_T_MAX - max_entries) {
        entries = Py_NewRef(Py_None);
        goto done;
    }
    /* Entries are not counted before parsing, as lines are: collected in a list. */
    found = PyList_New(0);
    if (found == NULL)
        goto done;
    gc_was_enabled = PyGC_Disable(); /* see "Collections" above */
    for (const char *p = base; p < end;) {
        struct record r;
        Py_ssize_t count = PyList_GET_SIZE(found);
        if (count >= max_entries || !parse_record(p, end, hash_size, little, max_data, &r)) {
            entries = Py_NewRef(Py_None);
            goto done;
        }
        PyObject *entry = record_entry(type, offsets, &shared, &r, first_index + count,
                                       p - base, hash_size);
        if (entry == NULL)
            goto done;
        int appended = PyList_Append(found, entry);
        Py_DECREF(entry);
        if (appended < 0)
            goto done;
        p += r.size;
    }
    entries = PyList_AsTuple(found); /* our own list: nothing else can reach it */
    if (entries != NULL)
        untrack(entries);
done:
    if (gc_was_enabled)
        PyGC_Enable();
    Py_XDECREF(found);
    shared_clear(&shared);
    PyBuffer_Release(&raw);
    return entries;
}

/* A bank to replay during chunk()'s walk. */
#define MAX_RUNS 8
struct run {
    enum alg_id alg;
    int logged;                      /* the bank of the template hash: extend it as logged */
    unsigned char value[MAX_DIGEST]; /* running PCR */
    const char *target;              /* quoted value (held by the caller's tuple), or NULL */
    PyObject *hits;                  /* counts after which value == target */
};

/* runs[] from ((bank, value, logged, target), ...); their count, or -1 with an
 * exception set (and no list left to free). */
static Py_ssize_t
read_runs(PyObject *specs, struct run runs[MAX_RUNS])
{
    Py_ssize_t count = PyTuple_GET_SIZE(specs);
    if (count > MAX_RUNS) {
        PyErr_SetString(PyExc_ValueError, "too many banks");
        return -1;
    }
    for (Py_ssize_t r = 0; r < count; r++) {
        PyObject *spec = PyTuple_GET_ITEM(specs, r), *name, *value, *logged, *target;
        if (!PyTuple_CheckExact(spec) || PyTuple_GET_SIZE(spec) != 4) {
            PyErr_SetString(PyExc_TypeError, "a run is (bank, value, logged, target)");
            goto fail;
        }
        name = PyTuple_GET_ITEM(spec, 0);
        value = PyTuple_GET_ITEM(spec, 1);
        logged = PyTuple_GET_ITEM(spec, 2);
        target = PyTuple_GET_ITEM(spec, 3);
        if (!PyUnicode_Check(name) || alg_from_name(name, &runs[r].alg) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a run's bank is a str");
            goto fail;
        }
        Py_ssize_t size = ALGS[runs[r].alg].size;
        if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) != size ||
            !PyBool_Check(logged) ||
            (target != Py_None &&
             (!PyBytes_CheckExact(target) || PyBytes_GET_SIZE(target) != size))) {
            PyErr_SetString(PyExc_ValueError,
                            "a run's value (and target) must be digests of its bank");
            goto fail;
        }
        memcpy(runs[r].value, PyBytes_AS_STRING(value), (size_t)size);
        runs[r].logged = logged == Py_True;
        runs[r].target = target == Py_None ? NULL : PyBytes_AS_STRING(target);
        runs[r].hits = PyList_New(0);
        if (runs[r].hits == NULL)
            goto fail;
        continue;
    fail:
        for (Py_ssize_t k = 0; k < r; k++)
            Py_CLEAR(runs[k].hits);
        return -1;
    }
    return count;
}

PyDoc_STRVAR(chunk_doc,
"chunk(entries, start, alg, entry_type, runs=())\n"
"    -> (pcr, hashed, hashes, violations, ((final, hits), ...)) | None\n\n"
"ima_replay_bulk.prepare for a list of entry_type: entries numbered from start,\n"
"all extending one PCR, none of the legacy ima template; each template hash\n"
"all zero (a violation, whose position is listed) or alg(template data).\n"
"None when any of this does not hold: the Python path decides then.\n"
"runs: ((bank, value, logged, target), ...), banks extended in the same walk\n"
"from value (that bank's value of the entries' PCR): ff..ff for a violation,\n"
"the logged hash when logged, else bank(template data); each gives its final\n"
"value and the counts of entries after which it equals target (None: none).");

static PyObject *
chunk(PyObject *module, PyObject *args)
{
    PyObject *entries, *alg_name, *run_specs = NULL;
    Py_ssize_t start;
    PyTypeObject *type;
    enum alg_id alg;
    Py_ssize_t offsets[F_COUNT];
    struct run runs[MAX_RUNS];
    Py_ssize_t run_count = 0;
    if (!PyArg_ParseTuple(args, "OnUO!|O!:chunk", &entries, &start, &alg_name, &PyType_Type,
                          &type, &PyTuple_Type, &run_specs))
        return NULL;
    if (!PyList_CheckExact(entries) && !PyTuple_CheckExact(entries)) {
        PyErr_SetString(PyExc_TypeError, "entries must be a list or a tuple");
        return NULL;
    }
    if (alg_from_name(alg_name, &alg) < 0 || slot_offsets(type, offsets) < 0)
        return NULL;
    /* A tuple of its own to walk: an allocation below can run a collection, and a
     * finaliser could change a list it was given. Each field read is held (by the
     * lists it goes into) before the next allocation. */
    PyObject *snapshot = own_tuple(entries);
    if (snapshot == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(snapshot), size = ALGS[alg].size;
    PyObject *hashed = PyTuple_New(n), *hashes = PyTuple_New(n), *found = PyList_New(0);
    PyObject *out = NULL;
    long pcr = -1;
    unsigned char computed[MAX_DIGEST];
    if (hashed == NULL || hashes == NULL || found == NULL)
        goto done;
    if (run_specs != NULL && (run_count = read_runs(run_specs, runs)) < 0) {
        run_count = 0; /* read_runs freed what it made */
        goto done;
    }
    if (start < 0 || start > PY_SSIZE_T_MAX - n)
        goto decline;
#define SLOT(e, f) (*(PyObject **)((char *)(e) + offsets[f]))
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyTuple_GET_ITEM(snapshot, i);
        if (!Py_IS_TYPE(entry, type))
            goto decline;
        PyObject *index = SLOT(entry, F_INDEX), *entry_pcr = SLOT(entry, F_PCR);
        PyObject *template = SLOT(entry, F_TEMPLATE), *data = SLOT(entry, F_DATA);
        PyObject *logged = SLOT(entry, F_HASH);
        if (index == NULL || entry_pcr == NULL || template == NULL || data == NULL ||
            logged == NULL || !PyLong_CheckExact(index) || !PyLong_CheckExact(entry_pcr) ||
            !PyUnicode_Check(template) || !PyBytes_CheckExact(data) ||
            !PyBytes_CheckExact(logged))
            goto decline;
        Py_ssize_t at = PyLong_AsSsize_t(index);
        long this_pcr = PyLong_AsLong(entry_pcr);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            goto decline;
        }
        if (at != start + i || (pcr >= 0 && this_pcr != pcr) || this_pcr < 0 ||
            PyUnicode_CompareWithASCIIString(template, "ima") == 0)
            goto decline;
        pcr = this_pcr;
        PyTuple_SET_ITEM(hashed, i, Py_NewRef(data));
        PyTuple_SET_ITEM(hashes, i, Py_NewRef(logged));
        const char *h = PyBytes_AS_STRING(logged);
        Py_ssize_t h_len = PyBytes_GET_SIZE(logged);
        int violation = all_zero(h, h_len);
        if (violation) {
            PyObject *position = PyLong_FromSsize_t(i);
            if (position == NULL || PyList_Append(found, position) < 0) {
                Py_XDECREF(position);
                goto done;
            }
            Py_DECREF(position);
        } else {
            hash2(alg, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), "", 0,
                  computed);
            if (h_len != size || memcmp(h, computed, (size_t)size) != 0)
                goto decline;
        }
        /* The runs, in the same walk (ima_replay_bulk.measurements: ff..ff for a
         * violation, the logged hash in its own bank, the bank's digest of the data
         * in the others; PCR = H(PCR || measurement)). */
        for (Py_ssize_t r = 0; r < run_count; r++) {
            struct run *run = &runs[r];
            Py_ssize_t bank_size = ALGS[run->alg].size;
            unsigned char measured[MAX_DIGEST];
            const void *m = measured;
            Py_ssize_t m_len = bank_size;
            if (violation) {
                memset(measured, 0xff, (size_t)bank_size);
            } else if (run->logged) {
                m = h;
                m_len = h_len;
            } else {
                hash2(run->alg, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), "", 0,
                      measured);
            }
            hash2(run->alg, run->value, (size_t)bank_size, m, (size_t)m_len, run->value);
            if (run->target != NULL && memcmp(run->value, run->target, (size_t)bank_size) == 0) {
                PyObject *count = PyLong_FromSsize_t(i + 1);
                if (count == NULL || PyList_Append(run->hits, count) < 0) {
                    Py_XDECREF(count);
                    goto done;
                }
                Py_DECREF(count);
            }
        }
    }
#undef SLOT
    if (n == 0)
        goto decline;
    untrack(hashed);
    untrack(hashes);
    PyObject *positions = PyList_AsTuple(found);
    PyObject *finished = positions == NULL ? NULL : PyTuple_New(run_count);
    for (Py_ssize_t r = 0; finished != NULL && r < run_count; r++) {
        PyObject *one = Py_BuildValue("(y#O)", (const char *)runs[r].value,
                                      ALGS[runs[r].alg].size, runs[r].hits);
        if (one == NULL)
            Py_CLEAR(finished);
        else
            PyTuple_SET_ITEM(finished, r, one);
    }
    if (finished != NULL)
        out = Py_BuildValue("(lOONN)", pcr, hashed, hashes, positions, finished);
    else
        Py_XDECREF(positions);
    goto done;
decline:
    out = Py_NewRef(Py_None);
done:
    for (Py_ssize_t r = 0; r < run_count; r++)
        Py_XDECREF(runs[r].hits);
    Py_XDECREF(hashed);
    Py_XDECREF(hashes);
    Py_XDECREF(found);
    Py_DECREF(snapshot);
    return out;
}

PyDoc_STRVAR(unallowed_doc,
"unallowed(entries, digests, entry_type) -> list[int]\n\n"
"Positions of the entries that are not plainly allowed: a file entry (ima,\n"
"ima-ng or ima-sig template; not a violation) whose (digest_alg, digest) is in\n"
"digests[name]. ima_policy.appraise_ima_full appraises the others in full.\n"
"digests: the policy's mapping, or its digest_index().");

/* Whether (alg, digest) is in listed: 1, 0, or -1 with an exception set.
 * A policy lists one or two digests per path, as a frozenset of (str, bytes)
 * pairs; comparing them with exact str and bytes gives what `in` gives, without
 * building and hashing a tuple per entry. Anything else takes `in` itself. */
static int
listed_pair(PyObject *listed, PyObject *alg, PyObject *digest)
{
    if (PyFrozenSet_CheckExact(listed) && PySet_GET_SIZE(listed) <= 4 &&
        PyUnicode_CheckExact(alg) && PyBytes_CheckExact(digest)) {
        /* Walked in place (no iterator object per entry): a frozenset cannot change,
         * and nothing here runs Python code. _PySet_NextEntry is CPython's own C API
         * for this (cpython/setobject.h); where a Python lacks it the build fails and
         * the Python path is used (setup.py). */
        Py_ssize_t pos = 0;
        PyObject *item;
        Py_hash_t item_hash;
        int found = 0, plain = 1;
        while (!found && plain && _PySet_NextEntry(listed, &pos, &item, &item_hash)) {
            plain = PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2 &&
                    PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 0)) &&
                    PyBytes_CheckExact(PyTuple_GET_ITEM(item, 1));
            if (plain) {
                PyObject *listed_digest = PyTuple_GET_ITEM(item, 1);
                found = PyBytes_GET_SIZE(listed_digest) == PyBytes_GET_SIZE(digest) &&
                        memcmp(PyBytes_AS_STRING(listed_digest), PyBytes_AS_STRING(digest),
                               (size_t)PyBytes_GET_SIZE(digest)) == 0 &&
                        PyUnicode_Compare(PyTuple_GET_ITEM(item, 0), alg) == 0;
            }
        }
        if (found || plain)
            return found;
    }
    PyObject *pair = PyTuple_Pack(2, alg, digest);
    if (pair == NULL)
        return -1;
    int found = PySequence_Contains(listed, pair);
    Py_DECREF(pair);
    return found;
}

/* ------------------------------------------------------------ digest index */

/* A runtime policy's digests (path -> {(alg, digest)}) in one flat open-addressing
 * table, built once per policy (ima_policy.load_runtime_policy): a lookup touches a
 * slot and one run of bytes instead of the half-dozen objects a dict of frozensets of
 * tuples spreads across memory. Slots are found by the path's Python str hash, which
 * is keyed per process (an entry name cannot be chosen to collide), and confirmed by
 * comparing UTF-8 bytes: for strings that encode (no lone surrogates), equal bytes
 * are equal strings. A path that does not encode is left out: only a name that does
 * not encode either could equal it, and such names are never looked up here (the
 * Python appraisal takes them). Each path's run in the arena: u16 path length, the
 * path, u16 digest count, then per digest u8 alg length, alg, u8 digest length,
 * digest. */
#define INDEX_CAPSULE "weightgate.ima_digest_index"

struct index_slot {
    Py_hash_t hash;
    Py_ssize_t at; /* offset of its run in the arena; -1: empty */
};

struct digest_index {
    Py_ssize_t mask;
    struct index_slot *slots;
    unsigned char *arena;
};

static void
index_free(PyObject *capsule)
{
    struct digest_index *index = PyCapsule_GetPointer(capsule, INDEX_CAPSULE);
    if (index != NULL) {
        PyMem_Free(index->slots);
        PyMem_Free(index->arena);
        PyMem_Free(index);
    }
}

/* Append n bytes to a growing arena; -1 on memory error. */
static int
arena_put(unsigned char **arena, Py_ssize_t *used, Py_ssize_t *room, const void *bytes,
          Py_ssize_t n)
{
    if (*used + n > *room) {
        Py_ssize_t grown = *room ? *room : 4096;
        while (grown < *used + n)
            grown *= 2;
        unsigned char *larger = PyMem_Realloc(*arena, (size_t)grown);
        if (larger == NULL)
            return -1;
        *arena = larger;
        *room = grown;
    }
    memcpy(*arena + *used, bytes, (size_t)n);
    *used += n;
    return 0;
}

PyDoc_STRVAR(digest_index_doc,
"digest_index(digests) -> capsule | None\n\n"
"digests (path -> frozenset of (alg, digest)) as a flat table for unallowed();\n"
"None unless every key is a str, every value a frozenset of (str, bytes) tuples,\n"
"and the sizes fit the table's fields (the mapping is then used as it is).");

static PyObject *
digest_index(PyObject *module, PyObject *mapping)
{
    if (!PyMapping_Check(mapping)) {
        PyErr_SetString(PyExc_TypeError, "digests must be a mapping");
        return NULL;
    }
    PyObject *items = PyMapping_Items(mapping); /* a list of its own */
    if (items == NULL)
        return NULL;
    PyObject *out = NULL;
    struct digest_index *index = PyMem_Calloc(1, sizeof *index);
    Py_ssize_t count = PyList_GET_SIZE(items), capacity = 8, used = 0, room = 0;
    while (capacity < count + count / 2 + 1) /* at most two thirds full */
        capacity *= 2;
    if (index == NULL || (index->slots = PyMem_Calloc((size_t)capacity, sizeof *index->slots)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    index->mask = capacity - 1;
    for (Py_ssize_t i = 0; i < capacity; i++)
        index->slots[i].at = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
            goto decline;
        PyObject *path = PyTuple_GET_ITEM(pair, 0), *listed = PyTuple_GET_ITEM(pair, 1);
        if (!PyUnicode_CheckExact(path) || !PyFrozenSet_CheckExact(listed) ||
            PySet_GET_SIZE(listed) > 0xffff)
            goto decline;
        Py_ssize_t path_len;
        const char *path_utf8 = PyUnicode_AsUTF8AndSize(path, &path_len);
        if (path_utf8 == NULL) { /* lone surrogates: see above */
            PyErr_Clear();
            continue;
        }
        if (path_len > 0xffff)
            goto decline;
        Py_hash_t hash = PyObject_Hash(path); /* an exact str: no Python code */
        if (hash == -1)
            goto done;
        Py_ssize_t at = used, pos = 0;
        unsigned char head[2] = {(unsigned char)(path_len >> 8), (unsigned char)path_len};
        unsigned char n[2] = {(unsigned char)(PySet_GET_SIZE(listed) >> 8),
                              (unsigned char)PySet_GET_SIZE(listed)};
        if (arena_put(&index->arena, &used, &room, head, 2) < 0 ||
            arena_put(&index->arena, &used, &room, path_utf8, path_len) < 0 ||
            arena_put(&index->arena, &used, &room, n, 2) < 0)
            goto nomem;
        PyObject *item;
        Py_hash_t item_hash;
        while (_PySet_NextEntry(listed, &pos, &item, &item_hash)) {
            if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 ||
                !PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 0)) ||
                !PyBytes_CheckExact(PyTuple_GET_ITEM(item, 1)))
                goto decline;
            Py_ssize_t alg_len;
            const char *alg = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(item, 0), &alg_len);
            PyObject *digest = PyTuple_GET_ITEM(item, 1);
            if (alg == NULL) {
                PyErr_Clear();
                goto decline;
            }
            if (alg_len > 0xff || PyBytes_GET_SIZE(digest) > 0xff)
                goto decline;
            unsigned char alg_size = (unsigned char)alg_len;
            unsigned char digest_size = (unsigned char)PyBytes_GET_SIZE(digest);
            if (arena_put(&index->arena, &used, &room, &alg_size, 1) < 0 ||
                arena_put(&index->arena, &used, &room, alg, alg_len) < 0 ||
                arena_put(&index->arena, &used, &room, &digest_size, 1) < 0 ||
                arena_put(&index->arena, &used, &room, PyBytes_AS_STRING(digest), digest_size) < 0)
                goto nomem;
        }
        Py_ssize_t slot = (Py_ssize_t)((size_t)hash & (size_t)index->mask);
        while (index->slots[slot].at >= 0)
            slot = (slot + 1) & index->mask;
        index->slots[slot].hash = hash;
        index->slots[slot].at = at;
    }
    out = PyCapsule_New(index, INDEX_CAPSULE, index_free);
    if (out != NULL)
        index = NULL; /* the capsule owns it */
    goto done;
nomem:
    PyErr_NoMemory();
    goto done;
decline:
    out = Py_NewRef(Py_None);
done:
    if (index != NULL) {
        PyMem_Free(index->slots);
        PyMem_Free(index->arena);
        PyMem_Free(index);
    }
    Py_DECREF(items);
    return out;
}

/* Whether the index lists (alg, digest) for name: 1 or 0 (never an error; a name or
 * alg that does not encode is 0, leaving the entry to the Python appraisal). */
static int
index_allows(const struct digest_index *index, PyObject *name, PyObject *alg, PyObject *digest)
{
    Py_ssize_t name_len, alg_len;
    const char *name_utf8 = PyUnicode_AsUTF8AndSize(name, &name_len);
    const char *alg_utf8 = name_utf8 == NULL ? NULL : PyUnicode_AsUTF8AndSize(alg, &alg_len);
    Py_hash_t hash = alg_utf8 == NULL ? -1 : PyObject_Hash(name);
    if (hash == -1) {
        PyErr_Clear();
        return 0;
    }
    const unsigned char *arena = index->arena;
    Py_ssize_t digest_len = PyBytes_GET_SIZE(digest);
    const char *digest_bytes = PyBytes_AS_STRING(digest);
    for (Py_ssize_t slot = (Py_ssize_t)((size_t)hash & (size_t)index->mask);
         index->slots[slot].at >= 0; slot = (slot + 1) & index->mask) {
        if (index->slots[slot].hash != hash)
            continue;
        const unsigned char *run = arena + index->slots[slot].at;
        Py_ssize_t path_len = run[0] << 8 | run[1];
        if (path_len != name_len || memcmp(run + 2, name_utf8, (size_t)name_len) != 0)
            continue;
        run += 2 + path_len;
        Py_ssize_t listed = run[0] << 8 | run[1];
        run += 2;
        for (Py_ssize_t k = 0; k < listed; k++) {
            Py_ssize_t a_len = run[0], d_len = run[1 + a_len];
            if (a_len == alg_len && d_len == digest_len &&
                memcmp(run + 1, alg_utf8, (size_t)a_len) == 0 &&
                memcmp(run + 2 + a_len, digest_bytes, (size_t)d_len) == 0)
                return 1;
            run += 2 + a_len + d_len;
        }
        return 0; /* the path is listed once */
    }
    return 0;
}

/* 1 when entry is a file entry (not a violation) whose (digest_alg, digest) is in
 * digests[name], 0 when not, -1 with an exception set.  The lookups can run Python
 * code (__hash__, __eq__, a mapping's __getitem__), so every object used after them
 * is held by a reference of its own. */
static int
plainly_allowed(PyObject *entry, const Py_ssize_t offsets[F_COUNT], PyObject *digests)
{
#define SLOT(f) (*(PyObject **)((char *)entry + offsets[f]))
    PyObject *template = SLOT(F_TEMPLATE), *logged = SLOT(F_HASH);
    PyObject *alg = SLOT(F_ALG), *digest = SLOT(F_DIGEST), *name = SLOT(F_NAME);
#undef SLOT
    int file = template != NULL && PyUnicode_Check(template) &&
               (PyUnicode_CompareWithASCIIString(template, "ima-ng") == 0 ||
                PyUnicode_CompareWithASCIIString(template, "ima-sig") == 0 ||
                PyUnicode_CompareWithASCIIString(template, "ima") == 0);
    if (!file || logged == NULL || !PyBytes_Check(logged) ||
        all_zero(PyBytes_AS_STRING(logged), PyBytes_GET_SIZE(logged)) || alg == NULL ||
        alg == Py_None || digest == NULL || digest == Py_None || name == NULL ||
        !PyUnicode_CheckExact(name))
        return 0;
    if (PyCapsule_CheckExact(digests)) {
        /* The index: no Python code runs, nothing needs holding. */
        if (!PyUnicode_CheckExact(alg) || !PyBytes_CheckExact(digest))
            return 0;
        const struct digest_index *index = PyCapsule_GetPointer(digests, INDEX_CAPSULE);
        return index == NULL ? -1 : index_allows(index, name, alg, digest);
    }
    Py_INCREF(alg);
    Py_INCREF(digest);
    Py_INCREF(name);
    PyObject *listed = PyObject_GetItem(digests, name);
    Py_DECREF(name);
    int allowed = 0;
    if (listed == NULL) {
        if (PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
        } else {
            allowed = -1;
        }
    } else {
        allowed = listed_pair(listed, alg, digest);
        Py_DECREF(listed);
    }
    Py_DECREF(alg);
    Py_DECREF(digest);
    return allowed;
}

static PyObject *
unallowed(PyObject *module, PyObject *args)
{
    PyObject *entries, *digests;
    PyTypeObject *type;
    Py_ssize_t offsets[F_COUNT];
    if (!PyArg_ParseTuple(args, "OOO!:unallowed", &entries, &digests, &PyType_Type, &type))
        return NULL;
    if (!PyList_CheckExact(entries) && !PyTuple_CheckExact(entries)) {
        PyErr_SetString(PyExc_TypeError, "entries must be a list or a tuple");
        return NULL;
    }
    if (PyCapsule_CheckExact(digests)) {
        if (PyCapsule_GetPointer(digests, INDEX_CAPSULE) == NULL)
            return NULL; /* another capsule: ValueError */
    } else if (!PyMapping_Check(digests)) {
        PyErr_SetString(PyExc_TypeError, "digests must be a mapping or a digest index");
        return NULL;
    }
    if (slot_offsets(type, offsets) < 0)
        return NULL;
    /* A tuple of its own: Python code run by the lookups cannot change it. */
    PyObject *snapshot = own_tuple(entries);
    PyObject *out = snapshot == NULL ? NULL : PyList_New(0);
    if (out == NULL) {
        Py_XDECREF(snapshot);
        return NULL;
    }
    /* Collections paused (see "Collections" above) only with the index: a mapping's
     * lookups run Python code, which must find the collector as it left it. */
    int gc_was_enabled = PyCapsule_CheckExact(digests) ? PyGC_Disable() : 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(snapshot); i++) {
        PyObject *entry = PyTuple_GET_ITEM(snapshot, i);
        int allowed = 0;
        if (Py_IS_TYPE(entry, type)) {
            Py_INCREF(entry);
            allowed = plainly_allowed(entry, offsets, digests);
            Py_DECREF(entry);
        }
        if (allowed < 0)
            goto fail;
        if (!allowed) {
            PyObject *position = PyLong_FromSsize_t(i);
            if (position == NULL || PyList_Append(out, position) < 0) {
                Py_XDECREF(position);
                goto fail;
            }
            Py_DECREF(position);
        }
    }
    if (gc_was_enabled)
        PyGC_Enable();
    Py_DECREF(snapshot);
    return out;
fail:
    if (gc_was_enabled)
        PyGC_Enable();
    Py_DECREF(snapshot);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"ascii_entries", ascii_entries, METH_VARARGS, ascii_entries_doc},
    {"binary_entries", binary_entries, METH_VARARGS, binary_entries_doc},
    {"chunk", chunk, METH_VARARGS, chunk_doc},
    {"unallowed", unallowed, METH_VARARGS, unallowed_doc},
    {"digest_index", digest_index, METH_O, digest_index_doc},
    {"extend", extend, METH_VARARGS, extend_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_ima_native",
    "The IMA hot path in C; use verifier.evidence.tpm.ima_native.", -1, METHODS,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__ima_native(void)
{
    memset(HEX, -1, sizeof HEX);
    for (int d = 0; d < 10; d++)
        HEX['0' + d] = (signed char)d;
    for (int d = 0; d < 6; d++)
        HEX['a' + d] = (signed char)(10 + d);
    for (unsigned first = 0; first < 256; first++)
        for (unsigned second = 0; second < 256; second++)
            HEX_PAIR[first << 8 | second] =
                HEX[first] < 0 || HEX[second] < 0
                    ? 0x100
                    : (uint16_t)((unsigned)HEX[first] << 4 | (unsigned)HEX[second]);
    return PyModule_Create(&MODULE);
}
