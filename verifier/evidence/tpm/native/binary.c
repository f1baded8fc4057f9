/* Binary lists (binary_runtime_measurements, what the agent sends): parse_record is
 * the C twin of ima_binary for the forms it accepts. */
#include "ima_native.h"

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
    int alg; /* index into WG_D_NG_ALGS */
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
        if ((size_t)tname_len == WG_TEMPLATE_LENGTHS[t] &&
            memcmp(tname, WG_TEMPLATE_NAMES[t], (size_t)tname_len) == 0)
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
        Py_ssize_t len = (Py_ssize_t)WG_D_NG_ALGS[a].length;
        if (d_ng_len == len + 2 + WG_D_NG_ALGS[a].size &&
            memcmp(d_ng, WG_D_NG_ALGS[a].name, (size_t)len) == 0 && d_ng[len] == ':' &&
            d_ng[len + 1] == '\0')
            out->alg = a;
    }
    if (out->alg < 0)
        return 0;
    out->digest = d_ng + WG_D_NG_ALGS[out->alg].length + 2;
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
    PyObject *extra = NULL;
    if (r->template != T_NG &&
        (extra = PyBytes_FromStringAndSize(r->extra, r->extra_len)) == NULL)
        return NULL; /* before anything else is made with the exception set */
    PyObject *data = PyBytes_FromStringAndSize(r->data, r->data_len);
    return wg_make_entry(type, offsets, shared, r->template, r->alg, r->pcr, index, offset,
                      r->hash, hash_size, r->digest, r->name, r->name_len, data, extra);
}

const char wg_binary_entries_doc[] = 
"binary_entries(raw, hash_size, first_index, little, max_entries, max_data, entry_type)\n"
"    -> tuple[ImaEntry, ...] | None\n\n"
"Every entry of a non-empty binary list (of the given byte order) as an\n"
"entry_type, or None unless every entry is a well-formed ima-ng, ima-sig or\n"
"ima-buf entry with a known d-ng algorithm and at most max_data bytes of\n"
"template data (and there are at most max_entries).";

PyObject *
wg_binary_entries(PyObject *module, PyObject *args)
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
    if (wg_entry_layout(type, hash_size, offsets) < 0)
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
        wg_untrack(entries);
done:
    if (gc_was_enabled)
        PyGC_Enable();
    Py_XDECREF(found);
    wg_shared_clear(&shared);
    PyBuffer_Release(&raw);
    return entries;
}

