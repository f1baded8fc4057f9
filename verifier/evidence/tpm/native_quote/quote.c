/*
 * A TPM2_Quote's TPMS_ATTEST and its TPMT_SIGNATURE framed in C, for the per-quote
 * path (verifier/evidence/tpm/quote_native.py is the only caller).
 *
 * Why C: the Python readers (wire.py, then the objects built slot by slot) take a
 * few microseconds each, but right after an ECDSA verification, whose tables push
 * the interpreter's working set out of the CPU caches, the same Python code runs
 * three to four times slower; one C call touches far less (bench/tpm_verify.py,
 * signature path with an ECC AK: ~25 of ~45 us of our own per-quote work there).
 *
 * Safety rules:
 *   - It never reports an error about the evidence. Anything it does not accept in
 *     full -- a wrong header, a length over the TSS bound, truncation, trailing
 *     bytes, clockInfo.safe not 0 or 1, an unknown signature scheme or hash, an
 *     empty signature part -- makes it return None, and the Python readers (the
 *     reference: parse_quote_attest, parse_signature) parse the input again and
 *     name the fault. So it can only be wrong by accepting what Python rejects or
 *     by returning other fields; tests/unit/test_quote_native.py and the atheris
 *     harness tests/fuzz/fuzz_quote_native.py compare the two on every input.
 *   - It reads only exact bytes objects (no buffer protocol: nothing can change
 *     under it), and every read is checked against the object's length first.
 *   - It builds the DER of an ECDSA (r, s) exactly as cryptography's
 *     encode_dss_signature does for the integers r and s (the tests compare them).
 *   - It makes the very objects the Python readers return (QuoteInfo with its
 *     ClockInfo, TpmSignature), their slots written directly as the readers'
 *     slot setters do; configure() takes only classes of exactly those slots
 *     (native_common/slots.c), and the PCR selection is decoded by the readers' own
 *     cached function, so a selection it refuses is refused here too (None).
 */
#include "../native_common/slots.h"

#include <stdint.h>
#include <string.h>

/* parse_common.MAX_ATTEST_SIZE / MAX_SIGNATURE_SIZE (checked by quote_native.py). */
#define MAX_ATTEST_SIZE 1024
#define MAX_SIGNATURE_SIZE 1024
/* The TSS buffer sizes wire.py enforces (see its constants). */
#define MAX_TPM2B_NAME 68
#define MAX_TPM2B_DATA 64
#define MAX_TPM2B_DIGEST 64
#define MAX_TPM2B_PUBLIC_KEY_RSA 512
#define MAX_TPM2B_ECC_PARAMETER 128
#define NUM_PCR_BANKS 16
#define PCR_SELECT_MAX 4

#define SIG_RSASSA 0x0014
#define SIG_RSAPSS 0x0016
#define SIG_ECDSA 0x0018

/* TPM_GENERATED_VALUE, then TPM_ST_ATTEST_QUOTE. */
static const unsigned char QUOTE_HEADER[6] = {0xff, 0x54, 0x43, 0x47, 0x80, 0x18};

static uint32_t
be16(const unsigned char *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t
be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
be64(const unsigned char *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* The hashes parse_common.HASH_ALGS names (sha1, sha256, sha384, sha512). */
#define HASH_SHA1 0x0004
#define HASH_SHA256 0x000b
#define HASH_SHA384 0x000c
#define HASH_SHA512 0x000d
static int
known_hash(uint32_t alg)
{
    return alg == HASH_SHA1 || alg == HASH_SHA256 || alg == HASH_SHA384 || alg == HASH_SHA512;
}

/* A TPM2B at *offset of at most `limit` bytes within [0, end): its start and size,
 * and *offset moved past it; 0 if it does not fit. */
static int
tpm2b(const unsigned char *raw, Py_ssize_t end, Py_ssize_t *offset, Py_ssize_t limit,
      Py_ssize_t *start, Py_ssize_t *size)
{
    if (end - *offset < 2)
        return 0;
    Py_ssize_t n = (Py_ssize_t)be16(raw + *offset);
    if (n > limit || end - *offset - 2 < n)
        return 0;
    *start = *offset + 2;
    *size = n;
    *offset = *start + n;
    return 1;
}

struct quote_fields {
    Py_ssize_t signer, signer_size, extra, extra_size, selection, selection_size, digest,
        digest_size;
    uint64_t clock, firmware;
    uint32_t reset, restart;
    int safe;
};

/* wire.read_quote_body after the header, with parse_quote_attest's checks on the
 * header, clockInfo.safe and the PCR banks (known, none repeated). */
static int
read_quote(const unsigned char *raw, Py_ssize_t end, struct quote_fields *q)
{
    if (end > MAX_ATTEST_SIZE || end < 6 || memcmp(raw, QUOTE_HEADER, 6) != 0)
        return 0;
    Py_ssize_t offset = 6;
    if (!tpm2b(raw, end, &offset, MAX_TPM2B_NAME, &q->signer, &q->signer_size))
        return 0;
    if (!tpm2b(raw, end, &offset, MAX_TPM2B_DATA, &q->extra, &q->extra_size))
        return 0;
    /* clock u64, resetCount u32, restartCount u32, safe u8, firmwareVersion u64,
     * then the selection count u32: 29 bytes. */
    if (end - offset < 29)
        return 0;
    const unsigned char *p = raw + offset;
    q->clock = be64(p);
    q->reset = be32(p + 8);
    q->restart = be32(p + 12);
    if (p[16] > 1)
        return 0;
    q->safe = p[16];
    q->firmware = be64(p + 17);
    uint32_t count = be32(p + 25);
    if (count > NUM_PCR_BANKS)
        return 0;
    q->selection = offset + 25;
    offset += 29;
    uint32_t seen[NUM_PCR_BANKS];
    for (uint32_t i = 0; i < count; i++) {
        if (end - offset < 3)
            return 0;
        uint32_t bank = be16(raw + offset);
        Py_ssize_t size = raw[offset + 2];
        if (size > PCR_SELECT_MAX || end - offset - 3 < size || !known_hash(bank))
            return 0;
        for (uint32_t j = 0; j < i; j++)
            if (seen[j] == bank)
                return 0;
        seen[i] = bank;
        offset += 3 + size;
    }
    q->selection_size = offset - q->selection;
    if (!tpm2b(raw, end, &offset, MAX_TPM2B_DIGEST, &q->digest, &q->digest_size))
        return 0;
    return offset == end;
}

/* One DER INTEGER for the unsigned big-endian `v` (leading zeros dropped, a zero byte
 * put before a set top bit, zero as 02 01 00); returns the bytes written. */
static Py_ssize_t
der_integer(unsigned char *out, const unsigned char *v, Py_ssize_t n)
{
    while (n > 0 && v[0] == 0) {
        v++;
        n--;
    }
    int pad = n == 0 || (v[0] & 0x80);
    Py_ssize_t len = n + pad, at = 0;
    out[at++] = 0x02;
    if (len >= 0x80)
        out[at++] = 0x81; /* len <= 129: one length byte */
    out[at++] = (unsigned char)len;
    if (pad)
        out[at++] = 0x00;
    memcpy(out + at, v, (size_t)n);
    return at + n;
}

/* The DER SEQUENCE of INTEGERs r and s (each at most MAX_TPM2B_ECC_PARAMETER). */
static PyObject *
der_signature(const unsigned char *r, Py_ssize_t r_size, const unsigned char *s,
              Py_ssize_t s_size)
{
    /* 2 x (tag, 0x81, length, pad byte, 128 bytes): read_signature bounds r and s
     * by MAX_TPM2B_ECC_PARAMETER, and a longer INTEGER would need more length bytes. */
    _Static_assert(MAX_TPM2B_ECC_PARAMETER + 1 <= 0xff, "one length byte per INTEGER");
    unsigned char body[2 * (4 + MAX_TPM2B_ECC_PARAMETER)];
    Py_ssize_t len = der_integer(body, r, r_size);
    len += der_integer(body + len, s, s_size);
    unsigned char head[4];
    Py_ssize_t head_len = 0;
    head[head_len++] = 0x30;
    if (len < 0x80) {
        head[head_len++] = (unsigned char)len;
    } else if (len < 0x100) {
        head[head_len++] = 0x81;
        head[head_len++] = (unsigned char)len;
    } else {
        head[head_len++] = 0x82;
        head[head_len++] = (unsigned char)(len >> 8);
        head[head_len++] = (unsigned char)len;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, head_len + len);
    if (out == NULL)
        return NULL;
    memcpy(PyBytes_AS_STRING(out), head, (size_t)head_len);
    memcpy(PyBytes_AS_STRING(out) + head_len, body, (size_t)len);
    return out;
}

struct signature_fields {
    uint32_t scheme, hash;
    Py_ssize_t parts[2], sizes[2];
};

/* wire.read_signature with parse_signature's checks (known hash, no empty part). */
static int
read_signature(const unsigned char *raw, Py_ssize_t end, struct signature_fields *s)
{
    if (end > MAX_SIGNATURE_SIZE || end < 4)
        return 0;
    s->scheme = be16(raw);
    s->hash = be16(raw + 2);
    if (!known_hash(s->hash))
        return 0;
    Py_ssize_t offset = 4;
    if (s->scheme == SIG_RSASSA || s->scheme == SIG_RSAPSS) {
        if (!tpm2b(raw, end, &offset, MAX_TPM2B_PUBLIC_KEY_RSA, &s->parts[0], &s->sizes[0]))
            return 0;
        s->parts[1] = s->sizes[1] = 0;
        return offset == end && s->sizes[0] > 0;
    }
    if (s->scheme != SIG_ECDSA)
        return 0;
    for (int i = 0; i < 2; i++)
        if (!tpm2b(raw, end, &offset, MAX_TPM2B_ECC_PARAMETER, &s->parts[i], &s->sizes[i]) ||
            s->sizes[i] == 0)
            return 0;
    return offset == end;
}

static PyObject *
slice(const unsigned char *raw, Py_ssize_t start, Py_ssize_t size)
{
    return PyBytes_FromStringAndSize((const char *)raw + start, size);
}

/* The classes the results are made of, their slots, and what fills them; set by
 * configure() (quote_native.py, at import). The fields, in slot order: */
enum { CLOCK_FIELDS = 4, QUOTE_FIELDS = 6, SIGNATURE_FIELDS = 3 };
static const char *const CLOCK_NAMES[CLOCK_FIELDS] = {"clock", "reset_count",
                                                      "restart_count", "safe"};
static const char *const QUOTE_NAMES[QUOTE_FIELDS] = {
    "qualified_signer", "extra_data", "clock_info", "firmware_version", "pcr_selection",
    "pcr_digest"};
static const char *const SIGNATURE_NAMES[SIGNATURE_FIELDS] = {"scheme", "hash_algorithm",
                                                              "signature"};

static struct {
    PyTypeObject *clock, *quote, *signature;
    Py_ssize_t clock_slots[CLOCK_FIELDS], quote_slots[QUOTE_FIELDS],
        signature_slots[SIGNATURE_FIELDS];
    PyObject *pcr_selection; /* framed TPML_PCR_SELECTION -> decoded tuple (cached) */
    PyObject *parse_error;   /* what pcr_selection raises for a selection it refuses */
    PyObject *schemes[3];    /* "rsassa", "rsapss", "ecdsa" */
    PyObject *hashes[4];     /* "sha1", "sha256", "sha384", "sha512" */
} made;

static const char *const SCHEME_NAMES[3] = {"rsassa", "rsapss", "ecdsa"};
static const char *const HASH_NAMES[4] = {"sha1", "sha256", "sha384", "sha512"};

static PyObject *
scheme_name(uint32_t scheme)
{
    return Py_NewRef(made.schemes[scheme == SIG_RSASSA ? 0 : scheme == SIG_RSAPSS ? 1 : 2]);
}

static PyObject *
hash_name(uint32_t alg)
{
    return Py_NewRef(made.hashes[alg == HASH_SHA1     ? 0
                                 : alg == HASH_SHA256 ? 1
                                 : alg == HASH_SHA384 ? 2
                                                      : 3]);
}

static PyObject *
configure(PyObject *module, PyObject *args)
{
    PyTypeObject *quote, *clock, *signature;
    PyObject *selection, *error;
    if (!PyArg_ParseTuple(args, "O!O!O!OO:configure", &PyType_Type, &quote, &PyType_Type,
                          &clock, &PyType_Type, &signature, &selection, &error))
        return NULL;
    if (!PyCallable_Check(selection) || !PyExceptionClass_Check(error)) {
        PyErr_SetString(PyExc_TypeError, "configure: pcr_selection must be callable, "
                                         "parse_error an exception class");
        return NULL;
    }
    /* Into locals first: a refused configuration leaves the current one whole. */
    Py_ssize_t clock_slots[CLOCK_FIELDS], quote_slots[QUOTE_FIELDS],
        signature_slots[SIGNATURE_FIELDS];
    if (wg_object_slots(clock, CLOCK_NAMES, CLOCK_FIELDS, clock_slots) < 0 ||
        wg_object_slots(quote, QUOTE_NAMES, QUOTE_FIELDS, quote_slots) < 0 ||
        wg_object_slots(signature, SIGNATURE_NAMES, SIGNATURE_FIELDS, signature_slots) < 0)
        return NULL;
    for (int i = 0; i < 3; i++)
        if (made.schemes[i] == NULL &&
            (made.schemes[i] = PyUnicode_InternFromString(SCHEME_NAMES[i])) == NULL)
            return NULL;
    for (int i = 0; i < 4; i++)
        if (made.hashes[i] == NULL &&
            (made.hashes[i] = PyUnicode_InternFromString(HASH_NAMES[i])) == NULL)
            return NULL;
    memcpy(made.clock_slots, clock_slots, sizeof clock_slots);
    memcpy(made.quote_slots, quote_slots, sizeof quote_slots);
    memcpy(made.signature_slots, signature_slots, sizeof signature_slots);
    Py_XSETREF(made.clock, (PyTypeObject *)Py_NewRef(clock));
    Py_XSETREF(made.quote, (PyTypeObject *)Py_NewRef(quote));
    Py_XSETREF(made.signature, (PyTypeObject *)Py_NewRef(signature));
    Py_XSETREF(made.pcr_selection, Py_NewRef(selection));
    Py_XSETREF(made.parse_error, Py_NewRef(error));
    Py_RETURN_NONE;
}

/* The QuoteInfo of q, None when pcr_selection refuses its selection, NULL on error. */
static PyObject *
quote_info(const unsigned char *a, const struct quote_fields *q)
{
    PyObject *selection = slice(a, q->selection, q->selection_size);
    if (selection == NULL)
        return NULL;
    PyObject *decoded = PyObject_CallOneArg(made.pcr_selection, selection);
    Py_DECREF(selection);
    if (decoded == NULL) {
        if (!PyErr_ExceptionMatches(made.parse_error))
            return NULL;
        PyErr_Clear(); /* the Python reader will name it */
        Py_RETURN_NONE;
    }
    /* Each value made only while none has failed (no call runs with an exception
     * set); wg_object_from releases what was made when one is missing. */
    PyObject *clock[CLOCK_FIELDS] = {NULL};
    if ((clock[0] = PyLong_FromUnsignedLongLong(q->clock)) != NULL &&
        (clock[1] = PyLong_FromUnsignedLong(q->reset)) != NULL &&
        (clock[2] = PyLong_FromUnsignedLong(q->restart)) != NULL)
        clock[3] = PyBool_FromLong(q->safe);
    PyObject *fields[QUOTE_FIELDS] = {NULL};
    fields[4] = decoded;
    if ((fields[2] = wg_object_from(made.clock, made.clock_slots, CLOCK_FIELDS, clock)) != NULL &&
        (fields[0] = slice(a, q->signer, q->signer_size)) != NULL &&
        (fields[1] = slice(a, q->extra, q->extra_size)) != NULL &&
        (fields[3] = PyLong_FromUnsignedLongLong(q->firmware)) != NULL)
        fields[5] = slice(a, q->digest, q->digest_size);
    return wg_object_from(made.quote, made.quote_slots, QUOTE_FIELDS, fields);
}

static PyObject *
quote(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "quote(attest, signature) takes 2 arguments");
        return NULL;
    }
    if (made.quote == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "quote: configure() has not run");
        return NULL;
    }
    PyObject *attest = args[0], *signature = args[1];
    if (!PyBytes_CheckExact(attest) || !PyBytes_CheckExact(signature))
        Py_RETURN_NONE;
    const unsigned char *a = (const unsigned char *)PyBytes_AS_STRING(attest);
    const unsigned char *g = (const unsigned char *)PyBytes_AS_STRING(signature);
    struct quote_fields q;
    struct signature_fields s;
    if (!read_quote(a, PyBytes_GET_SIZE(attest), &q) ||
        !read_signature(g, PyBytes_GET_SIZE(signature), &s))
        Py_RETURN_NONE;
    PyObject *info = quote_info(a, &q);
    if (info == NULL || info == Py_None)
        return info;
    PyObject *value;
    if (s.scheme == SIG_ECDSA)
        value = der_signature(g + s.parts[0], s.sizes[0], g + s.parts[1], s.sizes[1]);
    else
        value = slice(g, s.parts[0], s.sizes[0]);
    PyObject *fields[SIGNATURE_FIELDS] = {scheme_name(s.scheme), hash_name(s.hash), value};
    PyObject *sig = wg_object_from(made.signature, made.signature_slots, SIGNATURE_FIELDS, fields);
    if (sig == NULL) {
        Py_DECREF(info);
        return NULL;
    }
    PyObject *both = PyTuple_Pack(2, info, sig);
    Py_DECREF(info);
    Py_DECREF(sig);
    return both;
}

static PyMethodDef METHODS[] = {
    {"configure", configure, METH_VARARGS,
     "configure(QuoteInfo, ClockInfo, TpmSignature, pcr_selection, ParseError, /)\n\n"
     "The classes quote() makes (plain slotted classes with exactly their fields),\n"
     "the decoder of a framed TPML_PCR_SELECTION and the error it raises."},
    {"quote", (PyCFunction)(void (*)(void))quote, METH_FASTCALL,
     "quote(attest, signature, /) -> (QuoteInfo, TpmSignature) | None\n\n"
     "What parse_quote_attest(attest) and parse_signature(signature) return when\n"
     "both parse (an ECDSA signature as DER), or None: the Python readers must parse\n"
     "them and name the fault."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_quote_native",
    "A TPM quote and its signature framed in C; use verifier.evidence.tpm.quote_native.",
    -1, METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__quote_native(void)
{
    PyObject *module = PyModule_Create(&MODULE);
    if (module == NULL)
        return NULL;
    /* The bounds and hashes it enforces, checked against the Python readers' at
     * import (quote_native.py): a build that differs is not used. */
    if (PyModule_AddIntConstant(module, "MAX_ATTEST_SIZE", MAX_ATTEST_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_SIGNATURE_SIZE", MAX_SIGNATURE_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TPM2B_NAME", MAX_TPM2B_NAME) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TPM2B_DATA", MAX_TPM2B_DATA) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TPM2B_DIGEST", MAX_TPM2B_DIGEST) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TPM2B_PUBLIC_KEY_RSA", MAX_TPM2B_PUBLIC_KEY_RSA) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TPM2B_ECC_PARAMETER", MAX_TPM2B_ECC_PARAMETER) < 0 ||
        PyModule_AddIntConstant(module, "NUM_PCR_BANKS", NUM_PCR_BANKS) < 0 ||
        PyModule_AddIntConstant(module, "PCR_SELECT_MAX", PCR_SELECT_MAX) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    PyObject *hashes = Py_BuildValue("(iiii)", HASH_SHA1, HASH_SHA256, HASH_SHA384, HASH_SHA512);
    int added = hashes == NULL ? -1 : PyModule_AddObjectRef(module, "HASH_ALGS", hashes);
    Py_XDECREF(hashes);
    if (added < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
