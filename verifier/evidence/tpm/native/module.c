/*
 * The IMA hot path in C: the binary or ASCII list parsed into entries (ascii.c,
 * binary.c), template hashes checked and PCR 10 replayed (replay.c), entries the
 * policy plainly allows picked out (appraise.c); shared tables and helpers in
 * common.c. Python (ima_native.py) is the only caller.
 *
 * Why C: a full check of a 2,000-entry list is three hashes and a dozen small
 * objects per entry; through CPython each hash call costs more than the hash.
 *
 * Safety rules every file keeps:
 *   - It never reports an error about the evidence.  An entry it does not fully
 *     understand makes wg_ascii_entries() or wg_binary_entries() return None, and the
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
 *   - It takes only ImaEntry's exact layout (wg_slot_offsets) and only exact
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
#include "ima_native.h"

static PyMethodDef METHODS[] = {
    {"ascii_entries", wg_ascii_entries, METH_VARARGS, wg_ascii_entries_doc},
    {"binary_entries", wg_binary_entries, METH_VARARGS, wg_binary_entries_doc},
    {"chunk", wg_chunk, METH_VARARGS, wg_chunk_doc},
    {"unallowed", wg_unallowed, METH_VARARGS, wg_unallowed_doc},
    {"digest_index", wg_digest_index, METH_O, wg_digest_index_doc},
    {"extend", wg_extend, METH_VARARGS, wg_extend_doc},
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
    wg_init_tables();
    return PyModule_Create(&MODULE);
}
