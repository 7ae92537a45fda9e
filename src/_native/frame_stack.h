/* Read access to the value stack of a live CPython frame.
 *
 * CPython exposes a frame's locals but not its value stack, where the iterators
 * of the `for` loops the frame is running live. dart needs those iterators to
 * record a loop's position. This is the only place dart touches interpreter
 * internals; it is checked against CPython 3.12 and 3.13.
 */
#ifndef DART_FRAME_STACK_H
#define DART_FRAME_STACK_H
#include <Python.h>

/* Return a new tuple with the frame's value stack, bottom first (NULL slots
 * become None). The stack is only meaningful while the frame is suspended in
 * a call or in a sys.monitoring callback, when CPython has saved its stack
 * pointer. Returns NULL with TypeError if `frame` is not a frame object. */
PyObject *dart_frame_stack(PyObject *frame);

/* Replace the stack item at `slot` (from the bottom) with `new` if it is
 * `old`. Returns 1 if replaced, 0 if the slot does not hold `old` or lies
 * above the saved stack top, -1 with TypeError for a non-frame. */
int dart_frame_stack_replace(PyObject *frame, int slot, PyObject *old, PyObject *new);

#endif
