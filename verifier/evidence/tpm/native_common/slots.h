/* Objects of plain slotted classes (frozen slotted dataclasses) made from C, shared by
 * the C modules (native/ and native_quote/). Names start with wg_. */
#ifndef WEIGHTGATE_SLOTS_H
#define WEIGHTGATE_SLOTS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* offsets[i]: where slot names[i] of `type` lives, read from its member descriptors.
 * Only a plain class of exactly `count` object slots of its own, straight from
 * object, is taken; 0, or -1 with TypeError. */
int wg_object_slots(PyTypeObject *type, const char *const names[], int count,
                    Py_ssize_t offsets[]);

/* A `type` object holding values (stolen, in names order), made with tp_alloc and
 * its slots written directly (no constructor runs); NULL with an exception set when
 * a value is NULL (its creation failed) or the allocation fails. */
PyObject *wg_object_from(PyTypeObject *type, const Py_ssize_t offsets[], int count,
                         PyObject *values[]);

#endif
