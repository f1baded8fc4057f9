/* ASCII lists (ascii_runtime_measurements): parse_line is the C twin of
 * ima_ascii.parse_line for the forms it accepts. */
#include "ima_native.h"

static void
put_u32(char *at, Py_ssize_t value, int little)
{
    uint32_t v = (uint32_t)value;
    for (int i = 0; i < 4; i++)
        at[little ? i : 3 - i] = (char)(v >> (8 * i) & 0xff);
}

/* One parsed line: pointers into the list, bounded by the line. */
struct line {
    int pcr;
    enum template_id template;
    int alg; /* index into WG_D_NG_ALGS */
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
        !wg_unhex(p, hash_size, out->hash))
        return 0;
    p += 2 * hash_size + 1;
    /* Template name, then a space. */
    const char *space = memchr(p, ' ', (size_t)(end - p));
    if (space == NULL)
        return 0;
    int template = -1;
    for (int t = 0; t < T_COUNT && template < 0; t++) {
        size_t len = WG_TEMPLATE_LENGTHS[t];
        if ((size_t)(space - p) == len && memcmp(p, WG_TEMPLATE_NAMES[t], len) == 0)
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
        size_t len = WG_D_NG_ALGS[a].length;
        if ((size_t)(colon - p) == len && memcmp(p, WG_D_NG_ALGS[a].name, len) == 0)
            out->alg = a;
    }
    if (out->alg < 0)
        return 0;
    Py_ssize_t digest_size = WG_D_NG_ALGS[out->alg].size;
    if (space - (colon + 1) != 2 * digest_size || !wg_unhex(colon + 1, digest_size, out->digest))
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
            if (WG_HEX[(unsigned char)found[1 + i]] < 0)
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
    const char *alg = WG_D_NG_ALGS[line->alg].name;
    Py_ssize_t alg_len = (Py_ssize_t)WG_D_NG_ALGS[line->alg].length, digest_size = WG_D_NG_ALGS[line->alg].size;
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
        wg_unhex(line->extra_hex, line->extra_len, (unsigned char *)w + 4);
    }
    return data;
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
        if (extra == NULL)
            return NULL; /* before anything else is made with the exception set */
        /* checked hex digits (parse_line): cannot fail */
        wg_unhex(line->extra_hex, line->extra_len, (unsigned char *)PyBytes_AS_STRING(extra));
    }
    PyObject *data = template_data(line, little);
    return wg_make_entry(type, offsets, shared, line->template, line->alg, line->pcr, index,
                      offset, (const char *)line->hash, hash_size, (const char *)line->digest,
                      line->name, line->name_len, data, extra);
}

const char wg_ascii_entries_doc[] = 
"ascii_entries(raw, hash_size, first_index, little, max_entries, entry_type)\n"
"    -> tuple[ImaEntry, ...] | None\n\n"
"Every line of an ASCII list as an entry_type, or None unless every line is a\n"
"well-formed ima-ng, ima-sig or ima-buf line with a known d-ng algorithm (and\n"
"there are at most max_entries, and the list ends with a newline).";

PyObject *
wg_ascii_entries(PyObject *module, PyObject *args)
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
    if (wg_entry_layout(type, hash_size, offsets) < 0)
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
    wg_untrack(entries);
done:
    if (gc_was_enabled)
        PyGC_Enable();
    PyMem_Free(newlines);
    wg_shared_clear(&shared);
    PyBuffer_Release(&raw);
    return entries;
}

