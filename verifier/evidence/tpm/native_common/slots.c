/* Objects of plain slotted classes made from C (slots.h). */
#include "slots.h"

#include <structmember.h>

int
wg_object_slots(PyTypeObject *type, const char *const names[], int count, Py_ssize_t offsets[])
{
    if (!Py_IS_TYPE(type, &PyType_Type) || type->tp_base != &PyBaseObject_Type ||
        type->tp_itemsize != 0 || type->tp_dictoffset != 0 || type->tp_weaklistoffset != 0 ||
        type->tp_alloc != PyType_GenericAlloc ||
        type->tp_basicsize != (Py_ssize_t)(sizeof(PyObject) + (size_t)count * sizeof(PyObject *))) {
        PyErr_Format(PyExc_TypeError, "%s is not a plain class of %d slots", type->tp_name,
                     count);
        return -1;
    }
    for (int f = 0; f < count; f++) {
        PyObject *descr = PyObject_GetAttrString((PyObject *)type, names[f]);
        if (descr == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s has no field %s", type->tp_name, names[f]);
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
                         type->tp_name, names[f]);
            return -1;
        }
        for (int g = 0; g < f; g++) {
            if (offsets[g] == member->offset) {
                PyErr_Format(PyExc_TypeError, "%s.%s shares a slot", type->tp_name, names[f]);
                return -1;
            }
        }
        offsets[f] = member->offset;
    }
    return 0;
}

PyObject *
wg_object_from(PyTypeObject *type, const Py_ssize_t offsets[], int count, PyObject *values[])
{
    PyObject *object = NULL;
    for (int f = 0; f < count; f++)
        if (values[f] == NULL)
            goto fail;
    object = type->tp_alloc(type, 0);
    if (object == NULL)
        goto fail;
    for (int f = 0; f < count; f++)
        *(PyObject **)((char *)object + offsets[f]) = values[f]; /* steals each */
    return object;
fail:
    for (int f = 0; f < count; f++)
        Py_XDECREF(values[f]);
    return NULL;
}
