/* The timer wheel's arm and disarm: the compiled fast paths.
 *
 * What it owns
 *     TimerWheel.arm and TimerWheel.disarm (kcont/_core/timerwheel.py, whose
 *     docstring gives the layout and invariants) for continuations of the
 *     compiled layout with deadlines that fit in 63 bits.  The buckets are the
 *     same Python dicts as the reference's (insertion-ordered sets), so the
 *     reference's expiry, cascade and ``next_deadline`` run unchanged on them.
 *     Anything else (a stand-in entry, a huge deadline) goes to the reference
 *     (``_py_arm``, ``_py_disarm``); rebuilding the epoch heap goes to its
 *     ``_settle_epochs``.
 *
 * Locking
 *     None of its own: called with the runtime's state lock held, as the
 *     reference.  A bucket dict holds only continuations (identity hash, no
 *     user ``__eq__``: Continuation refuses to define one), so no user code
 *     runs here.
 */
#include "ckcont.h"

static int
settle_epochs(WheelObject *wheel)
{
    PyObject *r = PyObject_CallMethodNoArgs((PyObject *)wheel, kg.str_settle_epochs);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* An emptied far bucket of ``old_epoch`` goes (the reference's rule). */
static int
drop_far_epoch(WheelObject *wheel, long long old_epoch)
{
    PyObject *key = PyLong_FromLongLong(old_epoch);
    if (key == NULL) {
        return -1;
    }
    if (PyDict_DelItem(wheel->far, key) < 0) {
        Py_DECREF(key);
        return -1;
    }
    wheel->stale_room -= 1;
    int top_is_old = 0;
    if (PyList_GET_SIZE(wheel->epochs) > 0) {
        top_is_old = PyObject_RichCompareBool(PyList_GET_ITEM(wheel->epochs, 0), key, Py_EQ);
        if (top_is_old < 0) {
            Py_DECREF(key);
            return -1;
        }
    }
    Py_DECREF(key);
    if (wheel->stale_room < 0 || top_is_old) {
        return settle_epochs(wheel);
    }
    return 0;
}

int
wheel_arm(WheelObject *wheel, KContObject *kc, long long deadline)
{
    long long epoch = wheel->now >> NEAR_BITS;
    PyObject *old = kc->bucket;
    if (wheel->near == NULL || wheel->far == NULL || wheel->epochs == NULL || !PyList_Check(wheel->near) ||
        PyList_GET_SIZE(wheel->near) != NEAR_SIZE || !PyDict_Check(wheel->far) || !PyList_Check(wheel->epochs)) {
        PyErr_SetString(PyExc_SystemError, "kcont: malformed timer wheel");
        return -1;
    }
    if (old != NULL && old != Py_None) {
        if (PyDict_DelItem(old, (PyObject *)kc) < 0) {
            return -1;
        }
        if (PyDict_GET_SIZE(old) == 0 && (kc->deadline >> NEAR_BITS) != epoch) {
            long long old_epoch = kc->deadline >> NEAR_BITS;
            if (old_epoch != deadline >> NEAR_BITS && drop_far_epoch(wheel, old_epoch) < 0) {
                return -1;
            }
        }
    }
    else {
        wheel->count += 1;
    }
    PyObject *bucket; /* borrowed */
    if (deadline >> NEAR_BITS == epoch) {
        bucket = PyList_GET_ITEM(wheel->near, deadline & NEAR_MASK);
    }
    else {
        PyObject *key = PyLong_FromLongLong(deadline >> NEAR_BITS);
        if (key == NULL) {
            return -1;
        }
        bucket = PyDict_GetItemWithError(wheel->far, key);
        if (bucket == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                return -1;
            }
            PyObject *fresh = PyDict_New();
            if (fresh == NULL || PyDict_SetItem(wheel->far, key, fresh) < 0) {
                Py_XDECREF(fresh);
                Py_DECREF(key);
                return -1;
            }
            Py_DECREF(fresh); /* far holds it */
            bucket = fresh;
            PyObject *r = PyObject_CallFunctionObjArgs(kg.heappush, wheel->epochs, key, NULL);
            if (r == NULL) {
                Py_DECREF(key);
                return -1;
            }
            Py_DECREF(r);
        }
        Py_DECREF(key);
    }
    if (PyDict_SetItem(bucket, (PyObject *)kc, Py_None) < 0) {
        return -1;
    }
    Py_INCREF(bucket);
    Py_XSETREF(kc->bucket, bucket);
    kc->deadline = deadline;
    return 0;
}

int
wheel_disarm(WheelObject *wheel, KContObject *kc)
{
    PyObject *bucket = kc->bucket;
    if (bucket == NULL || bucket == Py_None) {
        PyErr_SetString(PyExc_AssertionError, "disarm of an entry that is not armed");
        return -1;
    }
    if (PyDict_DelItem(bucket, (PyObject *)kc) < 0) {
        return -1;
    }
    kc->bucket = Py_None;
    Py_INCREF(Py_None);
    wheel->count -= 1;
    int empty = PyDict_GET_SIZE(bucket) == 0;
    Py_DECREF(bucket); /* still held by the wheel's near list or far dict, until below */
    if (empty && (kc->deadline >> NEAR_BITS) != (wheel->now >> NEAR_BITS)) {
        return drop_far_epoch(wheel, kc->deadline >> NEAR_BITS);
    }
    return 0;
}

static int
fast_entry(PyObject *kc, PyObject *deadline, long long *out)
{
    if (!PyObject_TypeCheck(kc, &KCont_Type)) {
        return 0;
    }
    if (deadline == NULL) {
        return 1;
    }
    if (!PyLong_CheckExact(deadline)) {
        return 0;
    }
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(deadline, &overflow);
    if (overflow || *out < 0 || *out >= (1LL << 62)) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* self._py_<name>(*args): the reference, for what the fast path leaves. */
static PyObject *
call_reference(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *stack[4];
    if (nargs > 3) {
        return PyErr_Format(PyExc_TypeError, "expected at most 3 arguments, got %zd", nargs);
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        stack[1 + i] = args[i];
    }
    return PyObject_VectorcallMethod(name, stack, 1 + nargs, NULL);
}

PyObject *
wheel_arm_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long deadline = 0;
    if (nargs != 2 || !fast_entry(args[0], args[1], &deadline)) {
        return call_reference(self, kg.str_arm_py, args, nargs);
    }
    if (wheel_arm((WheelObject *)self, (KContObject *)args[0], deadline) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
wheel_disarm_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !fast_entry(args[0], NULL, NULL)) {
        return call_reference(self, kg.str_disarm_py, args, nargs);
    }
    if (wheel_disarm((WheelObject *)self, (KContObject *)args[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}
