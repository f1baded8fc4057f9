/* The appraisal fast path: entries the policy plainly allows (ima_policy's C path). */
#include "ima_native.h"

const char wg_unallowed_doc[] = 
"unallowed(entries, digests, entry_type) -> list[int]\n\n"
"Positions of the entries that are not plainly allowed: a file entry (ima,\n"
"ima-ng or ima-sig template; not a violation) whose (digest_alg, digest) is in\n"
"digests[name]. ima_policy.appraise_ima_full appraises the others in full.\n"
"digests: the policy's digest_index() (a policy without one is appraised in\n"
"Python alone).";

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

struct wg_digest_index {
    Py_ssize_t mask;
    struct index_slot *slots;
    unsigned char *arena;
};

static void
index_free(PyObject *capsule)
{
    struct wg_digest_index *index = PyCapsule_GetPointer(capsule, INDEX_CAPSULE);
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

const char wg_digest_index_doc[] = 
"digest_index(digests) -> capsule | None\n\n"
"digests (path -> frozenset of (alg, digest)) as a flat table for unallowed();\n"
"None unless every key is a str, every value a frozenset of (str, bytes) tuples,\n"
"and the sizes fit the table's fields (the mapping is then used as it is).";

PyObject *
wg_digest_index(PyObject *module, PyObject *mapping)
{
    if (!PyMapping_Check(mapping)) {
        PyErr_SetString(PyExc_TypeError, "digests must be a mapping");
        return NULL;
    }
    PyObject *items = PyMapping_Items(mapping); /* a list of its own */
    if (items == NULL)
        return NULL;
    PyObject *out = NULL;
    struct wg_digest_index *index = PyMem_Calloc(1, sizeof *index);
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
index_allows(const struct wg_digest_index *index, PyObject *name, PyObject *alg, PyObject *digest)
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

/* Whether entry is a file entry (not a violation) whose (digest_alg, digest) the
 * index lists for its name: 1 or 0. Nothing here runs Python code. */
static int
plainly_allowed(PyObject *entry, const Py_ssize_t offsets[F_COUNT],
                const struct wg_digest_index *index)
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
        wg_all_zero(PyBytes_AS_STRING(logged), PyBytes_GET_SIZE(logged)) || alg == NULL ||
        !PyUnicode_CheckExact(alg) || digest == NULL || !PyBytes_CheckExact(digest) ||
        name == NULL || !PyUnicode_CheckExact(name))
        return 0;
    return index_allows(index, name, alg, digest);
}

PyObject *
wg_unallowed(PyObject *module, PyObject *args)
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
    /* Only a digest index (another capsule: ValueError). */
    const struct wg_digest_index *index =
        PyCapsule_CheckExact(digests) ? PyCapsule_GetPointer(digests, INDEX_CAPSULE) : NULL;
    if (index == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "digests must be a digest index");
        return NULL;
    }
    if (wg_slot_offsets(type, offsets) < 0)
        return NULL;
    PyObject *snapshot = wg_own_tuple(entries);
    PyObject *out = snapshot == NULL ? NULL : PyList_New(0);
    if (out == NULL) {
        Py_XDECREF(snapshot);
        return NULL;
    }
    int gc_was_enabled = PyGC_Disable(); /* see "Collections" in module.c */
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(snapshot); i++) {
        PyObject *entry = PyTuple_GET_ITEM(snapshot, i);
        if (Py_IS_TYPE(entry, type) && plainly_allowed(entry, offsets, index))
            continue;
        PyObject *position = PyLong_FromSsize_t(i);
        if (position == NULL || PyList_Append(out, position) < 0) {
            Py_XDECREF(position);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(position);
    }
    if (gc_was_enabled)
        PyGC_Enable();
    Py_DECREF(snapshot);
    return out;
}
