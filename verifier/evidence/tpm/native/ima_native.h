/* Shared by the files of the C IMA module (see module.c for what it is and the
 * safety rules every file keeps). Names outside a file start with wg_/WG_. */
#ifndef WEIGHTGATE_IMA_NATIVE_H
#define WEIGHTGATE_IMA_NATIVE_H

#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <structmember.h>
#include <openssl/sha.h>
#include <stdint.h>
#include "../native_common/slots.h"
#include <string.h>

/* TPM banks this module hashes. */
enum alg_id { ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512, ALG_COUNT };
struct wg_alg {
    const char *name; /* TPM bank name, as ima_replay names banks */
    Py_ssize_t size;
};
extern const struct wg_alg WG_ALGS[ALG_COUNT];
#define MAX_DIGEST 64

/* ImaEntry's fields, in the order ImaEntry declares them. */
enum field { F_INDEX, F_PCR, F_HASH, F_TEMPLATE, F_DATA, F_ALG, F_DIGEST, F_NAME, F_SIG,
             F_BUF, F_OFFSET, F_COUNT };

enum template_id { T_NG, T_SIG, T_BUF, T_COUNT };
extern const char *const WG_TEMPLATE_NAMES[T_COUNT];
extern const size_t WG_TEMPLATE_LENGTHS[T_COUNT];

/* Kernel hash names a d-ng digest can carry, with their sizes (ima.HASH_SIZES). */
#define D_NG_ALG_COUNT 13
struct wg_d_ng_alg {
    const char *name;
    size_t length;
    Py_ssize_t size;
};
extern const struct wg_d_ng_alg WG_D_NG_ALGS[D_NG_ALG_COUNT];

extern signed char WG_HEX[256]; /* lowercase hex digit -> value, else -1 */

/* The template and algorithm names one call shares among its entries. */
struct shared {
    PyObject *templates[T_COUNT];
    PyObject *algs[D_NG_ALG_COUNT];
};

/* common.c */
void wg_init_tables(void);
void wg_hash2(enum alg_id alg, const void *a, size_t a_len, const void *b, size_t b_len,
              unsigned char *out);
int wg_alg_from_name(PyObject *name, enum alg_id *out);
int wg_all_zero(const char *p, Py_ssize_t n);
void wg_untrack(PyObject *tuple);
PyObject *wg_own_tuple(PyObject *seq);
int wg_unhex(const char *text, Py_ssize_t n, unsigned char *out);
int wg_slot_offsets(PyTypeObject *type, Py_ssize_t offsets[F_COUNT]);
int wg_entry_layout(PyTypeObject *type, Py_ssize_t hash_size, Py_ssize_t offsets[F_COUNT]);
void wg_shared_clear(struct shared *s);
PyObject *wg_make_entry(PyTypeObject *type, const Py_ssize_t offsets[F_COUNT],
                        struct shared *shared, int t, int alg, int pcr, Py_ssize_t index,
                        Py_ssize_t offset, const char *hash, Py_ssize_t hash_size,
                        const char *digest, const char *name, Py_ssize_t name_len,
                        PyObject *data, PyObject *extra);

/* The functions module.c exposes, and their docstrings. */
PyObject *wg_ascii_entries(PyObject *module, PyObject *args);  /* ascii.c */
PyObject *wg_binary_entries(PyObject *module, PyObject *args); /* binary.c */
PyObject *wg_extend(PyObject *module, PyObject *args);         /* replay.c */
PyObject *wg_chunk(PyObject *module, PyObject *args);          /* replay.c */
PyObject *wg_digest_index(PyObject *module, PyObject *mapping); /* appraise.c */
PyObject *wg_unallowed(PyObject *module, PyObject *args);      /* appraise.c */
extern const char wg_ascii_entries_doc[], wg_binary_entries_doc[], wg_extend_doc[],
    wg_chunk_doc[], wg_digest_index_doc[], wg_unallowed_doc[];

#endif
