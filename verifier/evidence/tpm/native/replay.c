/* Replay: template hashes checked and banks extended (ima_replay_bulk's C path). */
#include "ima_native.h"

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

const char wg_extend_doc[] = 
"extend(alg, value, items, hashed, violations, target) -> (bytes, list[int])\n\n"
"Extend value with one measurement per item: ff..ff at the (ascending)\n"
"violation positions, else alg(item) when hashed, else the item itself;\n"
"PCR = alg(PCR || measurement). Returns the final value and the counts of\n"
"items after which the value equals target (none when target is None).";

PyObject *
wg_extend(PyObject *module, PyObject *args)
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
    if (wg_alg_from_name(alg_name, &alg) < 0)
        goto done;
    /* A tuple of its own to walk (an allocation below can run a finaliser that changes
     * the list); bytes cannot change. */
    snapshot = wg_own_tuple(items);
    if (snapshot == NULL || check_bytes(snapshot, "items") < 0)
        goto done;
    Py_ssize_t size = WG_ALGS[alg].size;
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
            wg_hash2(alg, pcr, (size_t)size, ff, (size_t)size, pcr);
        } else if (hashed) {
            wg_hash2(alg, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item), "", 0, measured);
            wg_hash2(alg, pcr, (size_t)size, measured, (size_t)size, pcr);
        } else {
            wg_hash2(alg, pcr, (size_t)size, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item), pcr);
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

/* A bank to replay during wg_chunk()'s walk. */
#define MAX_RUNS 8
struct run {
    enum alg_id alg;
    int logged;                      /* the bank of the template hash: wg_extend it as logged */
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
        if (!PyUnicode_Check(name) || wg_alg_from_name(name, &runs[r].alg) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a run's bank is a str");
            goto fail;
        }
        Py_ssize_t size = WG_ALGS[runs[r].alg].size;
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

const char wg_chunk_doc[] = 
"chunk(entries, start, alg, entry_type, runs=())\n"
"    -> (pcr, hashed, hashes, violations, ((final, hits), ...)) | None\n\n"
"ima_replay_bulk.prepare for a list of entry_type: entries numbered from start,\n"
"all extending one PCR, none of the legacy ima template; each template hash\n"
"all zero (a violation, whose position is listed) or alg(template data).\n"
"None when any of this does not hold: the Python path decides then.\n"
"runs: ((bank, value, logged, target), ...), banks extended in the same walk\n"
"from value (that bank's value of the entries' PCR): ff..ff for a violation,\n"
"the logged hash when logged, else bank(template data); each gives its final\n"
"value and the counts of entries after which it equals target (None: none).";

PyObject *
wg_chunk(PyObject *module, PyObject *args)
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
    if (wg_alg_from_name(alg_name, &alg) < 0 || wg_slot_offsets(type, offsets) < 0)
        return NULL;
    /* A tuple of its own to walk: an allocation below can run a collection, and a
     * finaliser could change a list it was given. Each field read is held (by the
     * lists it goes into) before the next allocation. */
    PyObject *snapshot = wg_own_tuple(entries);
    if (snapshot == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(snapshot), size = WG_ALGS[alg].size;
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
        int violation = wg_all_zero(h, h_len);
        if (violation) {
            PyObject *position = PyLong_FromSsize_t(i);
            if (position == NULL || PyList_Append(found, position) < 0) {
                Py_XDECREF(position);
                goto done;
            }
            Py_DECREF(position);
        } else {
            wg_hash2(alg, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), "", 0,
                  computed);
            if (h_len != size || memcmp(h, computed, (size_t)size) != 0)
                goto decline;
        }
        /* The runs, in the same walk (ima_replay_bulk.measurements: ff..ff for a
         * violation, the logged hash in its own bank, the bank's digest of the data
         * in the others; PCR = H(PCR || measurement)). */
        for (Py_ssize_t r = 0; r < run_count; r++) {
            struct run *run = &runs[r];
            Py_ssize_t bank_size = WG_ALGS[run->alg].size;
            unsigned char measured[MAX_DIGEST];
            const void *m = measured;
            Py_ssize_t m_len = bank_size;
            if (violation) {
                memset(measured, 0xff, (size_t)bank_size);
            } else if (run->logged) {
                m = h;
                m_len = h_len;
            } else {
                wg_hash2(run->alg, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), "", 0,
                      measured);
            }
            wg_hash2(run->alg, run->value, (size_t)bank_size, m, (size_t)m_len, run->value);
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
    wg_untrack(hashed);
    wg_untrack(hashes);
    PyObject *positions = PyList_AsTuple(found);
    PyObject *finished = positions == NULL ? NULL : PyTuple_New(run_count);
    for (Py_ssize_t r = 0; finished != NULL && r < run_count; r++) {
        PyObject *one = Py_BuildValue("(y#O)", (const char *)runs[r].value,
                                      WG_ALGS[runs[r].alg].size, runs[r].hits);
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

