/* StateLock: the runtime's state lock in the compiled core.
 *
 * What it owns
 *     A lock with the interface and behaviour of ``threading.Lock``
 *     (``acquire(blocking=True, timeout=-1)``, ``release()``, ``locked()``,
 *     the context manager), which the fast paths take and release without a
 *     Python call.  Like ``threading.Lock``, a blocking ``acquire`` runs the
 *     signal handlers when a signal interrupts it (a KeyboardInterrupt then
 *     propagates from ``acquire`` with the lock not taken), and is not
 *     reentrant; any thread may release it.
 *
 * Invariants
 *     ``locked`` is 1 exactly while some thread holds ``lock``: it is written
 *     by that thread only, after acquiring and before releasing.
 *
 * Locking
 *     It is the lock.  The GIL is released only while blocking.
 */
#include "ckcont.h"

#ifndef _WIN32
#include <time.h>
#else
#include <windows.h>
#endif

static PyObject *
statelock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "StateLock() takes no arguments");
        return NULL;
    }
    StateLockObject *self = (StateLockObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_MemoryError, "cannot allocate a lock");
        return NULL;
    }
    return (PyObject *)self;
}

static void
statelock_dealloc(StateLockObject *self)
{
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (self->lock != NULL) {
        if (self->locked) {
            PyThread_release_lock(self->lock); /* as threading.Lock: freeing a held lock is allowed */
        }
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static long long
monotonic_us(void)
{
#ifndef _WIN32
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
#else
    return (long long)(GetTickCount64() * 1000);
#endif
}

/* threading.Lock's acquire_timed: timeout_us < 0 waits for ever.  Returns 1
 * if acquired, 0 if not, -1 with an exception set (a signal handler raised). */
int
statelock_acquire(StateLockObject *self, long long timeout_us)
{
    PyLockStatus r = PyThread_acquire_lock_timed(self->lock, 0, 0);
    if (r == PY_LOCK_FAILURE && timeout_us != 0) {
        long long deadline = timeout_us > 0 ? monotonic_us() + timeout_us : 0;
        do {
            Py_BEGIN_ALLOW_THREADS
            r = PyThread_acquire_lock_timed(self->lock, timeout_us, 1);
            Py_END_ALLOW_THREADS
            if (r == PY_LOCK_INTR) {
                /* Run the signal handlers; an exception they raise (a
                 * KeyboardInterrupt) ends the wait, the lock not taken. */
                if (Py_MakePendingCalls() < 0) {
                    return -1;
                }
                if (timeout_us > 0) {
                    timeout_us = deadline - monotonic_us();
                    if (timeout_us <= 0) {
                        r = PY_LOCK_FAILURE;
                    }
                }
            }
        } while (r == PY_LOCK_INTR);
    }
    if (r == PY_LOCK_ACQUIRED) {
        self->locked = 1;
        return 1;
    }
    return 0;
}

int
statelock_release(StateLockObject *self)
{
    if (!self->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return -1;
    }
    self->locked = 0;
    PyThread_release_lock(self->lock);
    return 0;
}

static PyObject *
statelock_acquire_method(StateLockObject *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pd:acquire", keywords, &blocking, &timeout)) {
        return NULL;
    }
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout != timeout) {
        PyErr_SetString(PyExc_ValueError, "Invalid value NaN (not a number)");
        return NULL;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    long long timeout_us = -1;
    if (!blocking) {
        timeout_us = 0;
    }
    else if (timeout != -1) {
        if (timeout * 1e6 > (double)PY_TIMEOUT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
            return NULL;
        }
        timeout_us = (long long)(timeout * 1e6 + 0.999);
    }
    int r = statelock_acquire(self, timeout_us);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

static PyObject *
statelock_enter(StateLockObject *self, PyObject *unused)
{
    int r = statelock_acquire(self, -1);
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

static PyObject *
statelock_release_method(StateLockObject *self, PyObject *unused)
{
    if (statelock_release(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
statelock_exit(StateLockObject *self, PyObject *args)
{
    if (statelock_release(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
statelock_locked(StateLockObject *self, PyObject *unused)
{
    return PyBool_FromLong(self->locked);
}

static PyObject *
statelock_repr(StateLockObject *self)
{
    return PyUnicode_FromFormat("<%s kcont state lock object at %p>", self->locked ? "locked" : "unlocked", self);
}

static PyMethodDef statelock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))statelock_acquire_method, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool: as threading.Lock.acquire."},
    {"release", (PyCFunction)statelock_release_method, METH_NOARGS, "Release the lock."},
    {"locked", (PyCFunction)statelock_locked, METH_NOARGS, "True if the lock is held."},
    {"__enter__", (PyCFunction)statelock_enter, METH_NOARGS, "Acquire the lock."},
    {"__exit__", (PyCFunction)statelock_exit, METH_VARARGS, "Release the lock."},
    {NULL},
};

PyTypeObject StateLock_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.StateLock",
    .tp_basicsize = sizeof(StateLockObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The runtime's state lock: a threading.Lock that the compiled core takes without a call.",
    .tp_new = statelock_new,
    .tp_dealloc = (destructor)statelock_dealloc,
    .tp_methods = statelock_methods,
    .tp_repr = (reprfunc)statelock_repr,
    .tp_weaklistoffset = offsetof(StateLockObject, weakreflist),
};
