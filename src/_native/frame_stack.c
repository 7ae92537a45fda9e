/* Py_BUILD_CORE is needed for the layout of _PyInterpreterFrame; it is defined
 * in this translation unit only, so the rest of the extension stays on the
 * public API. */
#define Py_BUILD_CORE 1
#include "frame_stack.h"
#include "internal/pycore_frame.h"

#if PY_VERSION_HEX < 0x030C0000 || PY_VERSION_HEX >= 0x030E0000
#error "dart's frame access is written for CPython 3.12 and 3.13"
#endif

PyObject *dart_frame_stack(PyObject *frame)
{
    if (!PyFrame_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "dart_frame_stack() expects a frame object");
        return NULL;
    }
    _PyInterpreterFrame *f = ((PyFrameObject *)frame)->f_frame;
    PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)frame);
    int base = code->co_nlocalsplus;
    int top = f->stacktop;
    int limit = base + code->co_stacksize;
    Py_DECREF(code);
    if (top < base || top > limit) {
        /* Stack pointer not saved (frame running C code without saving it). */
        return PyTuple_New(0);
    }
    PyObject *items = PyTuple_New(top - base);
    if (items == NULL) {
        return NULL;
    }
    for (int i = base; i < top; i++) {
        PyObject *item = f->localsplus[i];
        if (item == NULL) {
            item = Py_None;
        }
        Py_INCREF(item);
        PyTuple_SET_ITEM(items, i - base, item);
    }
    return items;
}

int dart_frame_stack_replace(PyObject *frame, int slot, PyObject *old, PyObject *new)
{
    if (!PyFrame_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "dart_frame_stack_replace() expects a frame object");
        return -1;
    }
    _PyInterpreterFrame *f = ((PyFrameObject *)frame)->f_frame;
    PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)frame);
    int index = code->co_nlocalsplus + slot;
    int limit = code->co_nlocalsplus + code->co_stacksize;
    Py_DECREF(code);
    if (slot < 0 || index >= f->stacktop || f->stacktop > limit || f->localsplus[index] != old) {
        return 0;
    }
    Py_INCREF(new);
    f->localsplus[index] = new;
    Py_DECREF(old);
    return 1;
}
