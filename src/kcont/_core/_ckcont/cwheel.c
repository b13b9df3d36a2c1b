/* The timer wheel, compiled: kcont._core._ckcont.TimerWheel.
 *
 * What it owns
 *     The PENDING continuations of one runtime, keyed by deadline tick, with
 *     the layout, the algorithm and the invariants of the pure-Python
 *     reference (kcont/_core/timerwheel.py, whose docstring is the
 *     specification): a near wheel of NEAR_SIZE one-tick buckets for the
 *     current epoch, one far bucket per occupied later epoch, and a heap of
 *     the far epochs (with stale keys, rebuilt as the reference does).  The
 *     buckets are intrusive doubly linked lists through the continuations
 *     (``wlist``, ``wprev``, ``wnext``) instead of dicts: arming, re-arming
 *     and disarming are O(1) without hashing or allocation, and a bitmap of
 *     the occupied near buckets finds the next one in a few word tests.
 *     Entries must be continuations of the compiled layout, with deadlines
 *     below MAX_DEADLINE (2**62 ticks).
 *
 * Invariants (beyond the reference's)
 *     ``kc->wlist`` is the list holding ``kc`` (NULL when not armed); a list
 *     holds one reference to each of its entries; bit ``i`` of ``occupied``
 *     is set iff ``near[i]`` is not empty; a far bucket in ``far`` is never
 *     empty between calls.
 *
 * Locking
 *     None of its own: every method is called with the owning runtime's state
 *     lock held, as the reference.  No user code runs here (no hashing of
 *     continuations, no comparison of user objects); the heap's keys are
 *     ints.
 */
#include "ckcont.h"

/* -- lists ------------------------------------------------------------------ */

static inline void
list_append(KList *list, KContObject *kc)
{
    kc->wlist = list;
    kc->wnext = NULL;
    kc->wprev = list->tail;
    if (list->tail != NULL) {
        list->tail->wnext = kc;
    }
    else {
        list->head = kc;
    }
    list->tail = kc;
}

static inline void
list_unlink(KContObject *kc)
{
    KList *list = kc->wlist;
    if (kc->wprev != NULL) {
        kc->wprev->wnext = kc->wnext;
    }
    else {
        list->head = kc->wnext;
    }
    if (kc->wnext != NULL) {
        kc->wnext->wprev = kc->wprev;
    }
    else {
        list->tail = kc->wprev;
    }
    kc->wlist = NULL;
    kc->wprev = kc->wnext = NULL;
}

static inline int
near_index(WheelObject *wheel, KList *list)
{
    if (list >= wheel->near && list < wheel->near + NEAR_SIZE) {
        return (int)(list - wheel->near);
    }
    return -1;
}

static inline void
mark_near(WheelObject *wheel, int slot)
{
    wheel->occupied[slot >> 6] |= (uint64_t)1 << (slot & 63);
}

static inline void
unmark_near_if_empty(WheelObject *wheel, int slot)
{
    if (wheel->near[slot].head == NULL) {
        wheel->occupied[slot >> 6] &= ~((uint64_t)1 << (slot & 63));
    }
}

/* The first occupied near slot in [start, NEAR_SIZE), or -1. */
static int
next_occupied(WheelObject *wheel, int start)
{
    for (int word = start >> 6; word < NEAR_SIZE / 64; word++) {
        uint64_t bits = wheel->occupied[word];
        if (word == start >> 6) {
            bits &= ~(uint64_t)0 << (start & 63);
        }
        if (bits) {
            return (word << 6) + __builtin_ctzll(bits);
        }
    }
    return -1;
}

/* -- far buckets -------------------------------------------------------------- */

static int
far_traverse(FarBucketObject *self, visitproc visit, void *arg)
{
    for (KContObject *kc = self->list.head; kc != NULL; kc = kc->wnext) {
        Py_VISIT((PyObject *)kc);
    }
    return 0;
}

static void
list_clear(KList *list)
{
    while (list->head != NULL) {
        KContObject *kc = list->head;
        list_unlink(kc);
        Py_DECREF(kc);
    }
}

static int
far_clear(FarBucketObject *self)
{
    list_clear(&self->list);
    return 0;
}

static void
far_dealloc(FarBucketObject *self)
{
    PyObject_GC_UnTrack(self);
    far_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
list_length(KList *list)
{
    Py_ssize_t n = 0;
    for (KContObject *kc = list->head; kc != NULL; kc = kc->wnext) {
        n++;
    }
    return n;
}

static Py_ssize_t
far_len(FarBucketObject *self)
{
    return list_length(&self->list);
}

static PySequenceMethods far_as_sequence = {.sq_length = (lenfunc)far_len};

PyTypeObject FarBucket_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.FarBucket",
    .tp_basicsize = sizeof(FarBucketObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The armed continuations of one far epoch of the compiled timer wheel.",
    .tp_traverse = (traverseproc)far_traverse,
    .tp_clear = (inquiry)far_clear,
    .tp_dealloc = (destructor)far_dealloc,
    .tp_as_sequence = &far_as_sequence,
};

/* -- the epoch heap (heapq on a list of ints, as the reference) --------------------- */

static int
call_heap(PyObject *func, PyObject *heap, PyObject *item, PyObject **result)
{
    PyObject *r = item == NULL ? PyObject_CallOneArg(func, heap)
                               : PyObject_CallFunctionObjArgs(func, heap, item, NULL);
    if (r == NULL) {
        return -1;
    }
    if (result != NULL) {
        *result = r;
    }
    else {
        Py_DECREF(r);
    }
    return 0;
}

/* A far key (an epoch) is in ``far``. */
static int
far_has(WheelObject *wheel, PyObject *key)
{
    return PyDict_Contains(wheel->far, key);
}

/* The reference's _settle_epochs: pop stale keys off the top; rebuild once
 * there is no room for more. */
static int
settle_epochs(WheelObject *wheel)
{
    PyObject *epochs = wheel->epochs;
    while (PyList_GET_SIZE(epochs) > 0) {
        int live = far_has(wheel, PyList_GET_ITEM(epochs, 0));
        if (live < 0) {
            return -1;
        }
        if (live) {
            break;
        }
        if (call_heap(kg.heappop, epochs, NULL, NULL) < 0) {
            return -1;
        }
        wheel->stale_room += 1;
    }
    if (wheel->stale_room < 0) {
        PyObject *keys = PyDict_Keys(wheel->far);
        if (keys == NULL) {
            return -1;
        }
        if (PyList_SetSlice(epochs, 0, PyList_GET_SIZE(epochs), keys) < 0) {
            Py_DECREF(keys);
            return -1;
        }
        Py_DECREF(keys);
        if (call_heap(kg.heapify, epochs, NULL, NULL) < 0) {
            return -1;
        }
        wheel->stale_room = PyDict_GET_SIZE(wheel->far) + 64; /* _STALE_SLACK */
    }
    return 0;
}

static long long
heap_top(WheelObject *wheel, int *error)
{
    PyObject *top = PyList_GET_ITEM(wheel->epochs, 0);
    long long epoch = PyLong_AsLongLong(top);
    if (epoch == -1 && PyErr_Occurred()) {
        *error = 1;
    }
    return epoch;
}

/* An emptied far bucket of ``epoch`` goes (the reference's rule). */
static int
drop_far_epoch(WheelObject *wheel, long long epoch)
{
    PyObject *key = PyLong_FromLongLong(epoch);
    if (key == NULL) {
        return -1;
    }
    int r = PyDict_DelItem(wheel->far, key);
    Py_DECREF(key);
    if (r < 0) {
        return -1;
    }
    wheel->stale_room -= 1;
    int error = 0;
    if (wheel->stale_room < 0 || heap_top(wheel, &error) == epoch) {
        return error ? -1 : settle_epochs(wheel);
    }
    return error ? -1 : 0;
}

/* -- arm, disarm ---------------------------------------------------------------- */

int
wheel_arm(WheelObject *wheel, KContObject *kc, long long deadline)
{
    long long epoch = wheel->now >> NEAR_BITS;
    KList *old = kc->wlist;
    if (old != NULL) {
        list_unlink(kc); /* keeps its reference: it is linked again below */
        int slot = near_index(wheel, old);
        if (slot >= 0) {
            unmark_near_if_empty(wheel, slot);
        }
        else if (old->head == NULL && (kc->deadline >> NEAR_BITS) != epoch) {
            /* An emptied far bucket goes, unless kc is re-armed into it. */
            long long old_epoch = kc->deadline >> NEAR_BITS;
            if (old_epoch != deadline >> NEAR_BITS && drop_far_epoch(wheel, old_epoch) < 0) {
                Py_DECREF(kc);
                wheel->count -= 1;
                return -1;
            }
        }
    }
    else {
        Py_INCREF(kc);
        wheel->count += 1;
    }
    KList *list;
    if (deadline >> NEAR_BITS == epoch) {
        int slot = (int)(deadline & NEAR_MASK);
        list = &wheel->near[slot];
        mark_near(wheel, slot);
    }
    else {
        PyObject *key = PyLong_FromLongLong(deadline >> NEAR_BITS);
        if (key == NULL) {
            goto fail;
        }
        PyObject *bucket = PyDict_GetItemWithError(wheel->far, key); /* borrowed */
        if (bucket == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                goto fail;
            }
            bucket = (PyObject *)PyObject_GC_New(FarBucketObject, &FarBucket_Type);
            if (bucket == NULL) {
                Py_DECREF(key);
                goto fail;
            }
            ((FarBucketObject *)bucket)->list.head = ((FarBucketObject *)bucket)->list.tail = NULL;
            PyObject_GC_Track(bucket);
            if (PyDict_SetItem(wheel->far, key, bucket) < 0 ||
                call_heap(kg.heappush, wheel->epochs, key, NULL) < 0) {
                Py_DECREF(bucket);
                Py_DECREF(key);
                goto fail;
            }
            Py_DECREF(bucket); /* far holds it */
        }
        Py_DECREF(key);
        list = &((FarBucketObject *)bucket)->list;
    }
    list_append(list, kc);
    kc->deadline = deadline;
    return 0;
fail:
    /* Not linked anywhere: the wheel no longer holds it. */
    wheel->count -= 1;
    Py_DECREF(kc);
    return -1;
}

int
wheel_disarm(WheelObject *wheel, KContObject *kc)
{
    KList *list = kc->wlist;
    if (list == NULL) {
        PyErr_SetString(PyExc_AssertionError, "disarm of an entry that is not armed");
        return -1;
    }
    list_unlink(kc);
    wheel->count -= 1;
    int slot = near_index(wheel, list);
    int r = 0;
    if (slot >= 0) {
        unmark_near_if_empty(wheel, slot);
    }
    else if (list->head == NULL && (kc->deadline >> NEAR_BITS) != (wheel->now >> NEAR_BITS)) {
        /* An emptied far bucket would otherwise stay until its epoch. */
        r = drop_far_epoch(wheel, kc->deadline >> NEAR_BITS);
    }
    Py_DECREF(kc); /* the caller holds another reference (stop, a replacement) */
    return r;
}

/* -- expiry ------------------------------------------------------------------------ */

/* Move near[slot]'s entries to ``out`` (their references with them). */
static int
collect(WheelObject *wheel, int slot, PyObject *out)
{
    KList *list = &wheel->near[slot];
    while (list->head != NULL) {
        KContObject *kc = list->head;
        if (PyList_Append(out, (PyObject *)kc) < 0) {
            return -1;
        }
        list_unlink(kc);
        Py_DECREF(kc); /* out holds it now */
        wheel->count -= 1;
    }
    unmark_near_if_empty(wheel, slot);
    return 0;
}

/* The reference's _enter_epoch: spread far[epoch] over near. */
static int
enter_epoch(WheelObject *wheel, long long epoch)
{
    PyObject *key = PyLong_FromLongLong(epoch);
    if (key == NULL) {
        return -1;
    }
    PyObject *bucket = PyDict_GetItemWithError(wheel->far, key);
    if (bucket == NULL) {
        Py_DECREF(key);
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(bucket);
    int r = PyDict_DelItem(wheel->far, key);
    Py_DECREF(key);
    if (r < 0) {
        Py_DECREF(bucket);
        return -1;
    }
    wheel->stale_room -= 1;
    if (settle_epochs(wheel) < 0) {
        Py_DECREF(bucket);
        return -1;
    }
    KList *later = &((FarBucketObject *)bucket)->list;
    while (later->head != NULL) {
        KContObject *kc = later->head;
        list_unlink(kc); /* its reference moves with it */
        int slot = (int)(kc->deadline & NEAR_MASK);
        list_append(&wheel->near[slot], kc);
        mark_near(wheel, slot);
    }
    Py_DECREF(bucket);
    return 0;
}

/* The reference's expire_until (its tick-by-tick and scanning spans give
 * the same result: every entry due at or before ``tick``, in (tick, arming)
 * order; the bitmap finds the occupied buckets). */
static int
expire_until(WheelObject *wheel, long long tick, PyObject *out)
{
    long long now = wheel->now;
    while (now < tick) {
        long long t = now + 1;
        if (!(t & NEAR_MASK)) {
            wheel->now = now; /* enter_epoch's settle reads nothing of it, but keep it true */
            if (enter_epoch(wheel, t >> NEAR_BITS) < 0) {
                return -1;
            }
        }
        long long last = tick < (t | NEAR_MASK) ? tick : (t | NEAR_MASK); /* last tick of this epoch to collect */
        int start = (int)(t & NEAR_MASK), stop = (int)(last & NEAR_MASK) + 1;
        for (int slot = next_occupied(wheel, start); slot >= 0 && slot < stop;
             slot = next_occupied(wheel, slot + 1)) {
            if (collect(wheel, slot, out) < 0) {
                wheel->now = now;
                return -1;
            }
        }
        now = last;
        if (last < tick) {
            /* The epoch is over, and the near wheel empty: jump to the eve
             * of the earliest far epoch, or to ``tick``. */
            now = tick;
            if (PyList_GET_SIZE(wheel->epochs) > 0) {
                int error = 0;
                long long eve = (heap_top(wheel, &error) << NEAR_BITS) - 1;
                if (error) {
                    wheel->now = last;
                    return -1;
                }
                if (eve < now) {
                    now = eve;
                }
            }
        }
    }
    wheel->now = now;
    return 0;
}

/* -- the Python type ------------------------------------------------------------------ */

static PyObject *
wheel_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"now", NULL};
    long long now = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|L:TimerWheel", keywords, &now)) {
        return NULL;
    }
    WheelObject *self = (WheelObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->far = PyDict_New();
    self->epochs = PyList_New(0);
    if (self->far == NULL || self->epochs == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->stale_room = 64;
    self->now = now;
    return (PyObject *)self;
}

static int
wheel_traverse(WheelObject *self, visitproc visit, void *arg)
{
    for (int slot = next_occupied(self, 0); slot >= 0; slot = next_occupied(self, slot + 1)) {
        for (KContObject *kc = self->near[slot].head; kc != NULL; kc = kc->wnext) {
            Py_VISIT((PyObject *)kc);
        }
    }
    Py_VISIT(self->far);
    Py_VISIT(self->epochs);
    return 0;
}

static int
wheel_clear(WheelObject *self)
{
    for (int slot = 0; slot < NEAR_SIZE; slot++) {
        list_clear(&self->near[slot]);
        self->occupied[slot >> 6] = 0;
    }
    Py_CLEAR(self->far);
    Py_CLEAR(self->epochs);
    self->count = 0;
    return 0;
}

static void
wheel_dealloc(WheelObject *self)
{
    PyObject_GC_UnTrack(self);
    wheel_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
entry_and_deadline(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t expected, long long *deadline)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "expected %zd arguments, got %zd", expected, nargs);
        return -1;
    }
    if (!PyObject_TypeCheck(args[0], &KCont_Type)) {
        PyErr_Format(PyExc_TypeError, "the compiled timer wheel holds continuations, not %s",
                     Py_TYPE(args[0])->tp_name);
        return -1;
    }
    if (deadline != NULL) {
        *deadline = PyLong_AsLongLong(args[1]);
        if (*deadline == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (*deadline < 0 || *deadline >= MAX_DEADLINE) {
            PyErr_SetString(PyExc_OverflowError, "deadline out of the timer wheel's range");
            return -1;
        }
    }
    return 0;
}

static PyObject *
wheel_arm_method(WheelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    long long deadline;
    if (entry_and_deadline(args, nargs, 2, &deadline) < 0 || wheel_arm(self, (KContObject *)args[0], deadline) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
wheel_disarm_method(WheelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (entry_and_deadline(args, nargs, 1, NULL) < 0 || wheel_disarm(self, (KContObject *)args[0]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
wheel_expire_until_method(WheelObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "expire_until(tick, out: list)");
        return NULL;
    }
    long long tick = PyLong_AsLongLong(args[0]);
    if (tick == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (expire_until(self, tick, args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
wheel_next_deadline(WheelObject *self, PyObject *unused)
{
    if (!self->count) {
        Py_RETURN_NONE;
    }
    long long now = self->now;
    int start = (int)(now & NEAR_MASK) + 1;
    int found = start < NEAR_SIZE ? next_occupied(self, start) : -1;
    if (found >= 0) {
        return PyLong_FromLongLong(now + found - start + 1);
    }
    if (PyList_GET_SIZE(self->epochs) == 0) {
        PyErr_SetString(PyExc_SystemError, "kcont: armed entries but no epoch");
        return NULL;
    }
    int error = 0;
    long long epoch = heap_top(self, &error);
    if (error) {
        return NULL;
    }
    return PyLong_FromLongLong(epoch << NEAR_BITS);
}

static int
append_list(KList *list, PyObject *out)
{
    for (KContObject *kc = list->head; kc != NULL; kc = kc->wnext) {
        if (PyList_Append(out, (PyObject *)kc) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyObject *
wheel_iter(WheelObject *self)
{
    PyObject *entries = PyList_New(0);
    if (entries == NULL) {
        return NULL;
    }
    for (int slot = next_occupied(self, 0); slot >= 0; slot = next_occupied(self, slot + 1)) {
        if (append_list(&self->near[slot], entries) < 0) {
            Py_DECREF(entries);
            return NULL;
        }
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(self->far, &pos, &key, &value)) {
        if (append_list(&((FarBucketObject *)value)->list, entries) < 0) {
            Py_DECREF(entries);
            return NULL;
        }
    }
    PyObject *it = PyObject_GetIter(entries);
    Py_DECREF(entries);
    return it;
}

static Py_ssize_t
wheel_len(WheelObject *self)
{
    return self->count;
}

static PySequenceMethods wheel_as_sequence = {.sq_length = (lenfunc)wheel_len};

static PyMethodDef wheel_methods[] = {
    {"arm", (PyCFunction)(void (*)(void))wheel_arm_method, METH_FASTCALL,
     "arm(kc, deadline): arm (or re-arm) kc for deadline (> now)."},
    {"disarm", (PyCFunction)(void (*)(void))wheel_disarm_method, METH_FASTCALL,
     "disarm(kc): remove kc, which must be armed."},
    {"expire_until", (PyCFunction)(void (*)(void))wheel_expire_until_method, METH_FASTCALL,
     "expire_until(tick, out): append every entry due at or before tick to out, in expiry order."},
    {"next_deadline", (PyCFunction)wheel_next_deadline, METH_NOARGS,
     "A tick at or before the earliest deadline, or None if nothing is armed."},
    {NULL},
};

static PyMemberDef wheel_members[] = {
    {"now", T_LONGLONG, offsetof(WheelObject, now), 0, "Last tick whose expirations were collected."},
    {"count", T_PYSSIZET, offsetof(WheelObject, count), READONLY, "Entries armed."},
    {NULL},
};

PyTypeObject Wheel_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.TimerWheel",
    .tp_basicsize = sizeof(WheelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled timer wheel (see kcont._core.timerwheel for its specification).",
    .tp_new = wheel_new,
    .tp_traverse = (traverseproc)wheel_traverse,
    .tp_clear = (inquiry)wheel_clear,
    .tp_dealloc = (destructor)wheel_dealloc,
    .tp_iter = (getiterfunc)wheel_iter,
    .tp_as_sequence = &wheel_as_sequence,
    .tp_methods = wheel_methods,
    .tp_members = wheel_members,
};
