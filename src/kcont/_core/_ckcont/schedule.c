/* Continuation.schedule, stop and ack, and kcont_schedule: the compiled
 * fast paths.
 *
 * What it owns
 *     The rows "schedule(nticks=0)", "schedule(nticks>0)", "stop()" and
 *     "ack()" of the transition table (ckcont.h; kcont/_core/continuation.py)
 *     for the common case: for schedule, an
 *     exact int ``nticks`` in [0, 2**61), no ``cpu`` argument, a continuation
 *     that is not INVOKING (after ``ack``), not DESTROYED, not QUEUED (and not
 *     PENDING for an immediate schedule), on a runtime that is open and not
 *     tracing.  Every other case goes to the reference, ``_py_schedule``,
 *     before anything is written (see ckcont.h, "The rule of the fast paths").
 *
 * Locking
 *     S held from the flags test to the last write, as the reference.  What
 *     may be the last reference to a user object (a replaced context, the
 *     runtime's previous cached context) is released after S.
 */
#include "ckcont.h"

/* The largest nticks + 1 (the reference refuses more, as InvalidArgumentError). */
#define MAX_TICKS (1LL << 61)

/* type(self)._py_<name>(self, *args, **kwargs) with the vectorcall arguments
 * received. */
static PyObject *
call_reference(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *small[8];
    PyObject **stack = small;
    if (1 + nargs + nkw > 8) {
        stack = PyMem_Malloc((1 + nargs + nkw) * sizeof(PyObject *));
        if (stack == NULL) {
            return PyErr_NoMemory();
        }
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        stack[1 + i] = args[i];
    }
    PyObject *result = PyObject_VectorcallMethod(name, stack, (1 + nargs), kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    return result;
}

static int
name_is(PyObject *key, const char *text)
{
    return PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, text) == 0;
}

/* Release S keeping the exception being raised, if any. */
static void
release_keeping_error(PyObject *lock)
{
    PyObject *exc = take_exception();
    if (state_lock_release(lock) < 0) {
        /* The lock was held by us: a release cannot fail but by a bug. */
        PyErr_WriteUnraisable(lock);
    }
    if (exc != NULL) {
        restore_exception(exc);
    }
}

/* ready[band] |= bit (or &= ~bit with ``clear``) for one CPU serving rq. */
static int
cpu_update_ready(CPUObject *cpu, RunQueueObject *rq, int clear)
{
    PyObject *ready = cpu->ready;
    if (ready == NULL || !PyList_Check(ready) || rq->band < 0 || rq->band >= PyList_GET_SIZE(ready)) {
        PyErr_SetString(PyExc_SystemError, "kcont: malformed CPU ready mask");
        return -1;
    }
    PyObject *mask = PyList_GET_ITEM(ready, rq->band);
    PyObject *updated;
    if (clear) {
        PyObject *inverted = PyNumber_Invert(rq->bit);
        if (inverted == NULL) {
            return -1;
        }
        updated = PyNumber_And(mask, inverted);
        Py_DECREF(inverted);
    }
    else {
        updated = PyNumber_Or(mask, rq->bit);
    }
    if (updated == NULL) {
        return -1;
    }
    PyList_SET_ITEM(ready, rq->band, updated);
    Py_DECREF(mask);
    return 0;
}

/* RunQueue.mark_ready_locked (``clear``: clear_ready_locked): rq's bit in
 * the ready mask of every CPU serving it. */
int
rq_update_ready(RunQueueObject *rq, int clear)
{
    if (rq->cpu != Py_None) {
        return cpu_update_ready((CPUObject *)rq->cpu, rq, clear);
    }
    PyObject *cpus = PyObject_GetAttrString(rq->rt, "cpus");
    if (cpus == NULL) {
        return -1;
    }
    PyObject *seq = PySequence_Fast(cpus, "cpus must be a sequence");
    Py_DECREF(cpus);
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (cpu_update_ready((CPUObject *)PySequence_Fast_GET_ITEM(seq, i), rq, clear) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* The runtime of a continuation of the compiled layouts, with its state
 * lock (borrowed), or NULL (no exception): the reference then does it all. */
static RuntimeObject *
runtime_of(KContObject *self)
{
    WorkqueueObject *wq = (WorkqueueObject *)kcont_wq(self);
    if (!kg.hooks_set || wq == NULL || !PyObject_TypeCheck(wq, &Workqueue_Type) || wq->rt == NULL ||
        !PyObject_TypeCheck(wq->rt, &Runtime_Type) || ((RuntimeObject *)wq->rt)->lock == NULL) {
        return NULL;
    }
    return (RuntimeObject *)wq->rt;
}

/* The run queue an unspecified cpu means (the reference's rule), borrowed;
 * NULL with an exception set on error. */
static RunQueueObject *
default_rq(WorkqueueObject *wq, RuntimeObject *rt)
{
    PyObject *rqs = wq->rqs;
    if (rqs == NULL || !PyTuple_Check(rqs) || PyTuple_GET_SIZE(rqs) == 0) {
        PyErr_SetString(PyExc_SystemError, "kcont: malformed workqueue");
        return NULL;
    }
    Py_ssize_t index = 0;
    if (wq->percpu == Py_True) {
        PyObject *here = kcont_current_cpu();
        if (here == NULL) {
            return NULL;
        }
        if (here != Py_None && PyObject_TypeCheck(here, &CPU_Type) && ((CPUObject *)here)->rt == (PyObject *)rt) {
            index = PyLong_AsSsize_t(((CPUObject *)here)->index);
            if (index == -1 && PyErr_Occurred()) {
                Py_DECREF(here);
                return NULL;
            }
            if (index < 0 || index >= PyTuple_GET_SIZE(rqs)) {
                index = 0;
            }
        }
        Py_DECREF(here);
    }
    return (RunQueueObject *)PyTuple_GET_ITEM(rqs, index);
}

/* The fast path: 1 done, 0 left to the reference (nothing written), -1
 * with an exception set. */
static int schedule_fast_locked_part(KContObject *self, long long nticks, int ack);

static int
schedule_fast(KContObject *self, long long nticks, int ack)
{
    kcont_critical++;
    int r = schedule_fast_locked_part(self, nticks, ack);
    kcont_critical--;
    return r;
}

static int
schedule_fast_locked_part(KContObject *self, long long nticks, int ack)
{
    RuntimeObject *rt = runtime_of(self);
    if (rt == NULL) {
        return 0;
    }
    RunQueueObject *rq = default_rq((WorkqueueObject *)kcont_wq(self), rt);
    if (rq == NULL) {
        return -1;
    }
    Py_INCREF(rq); /* ours until the end */
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        Py_DECREF(rq);
        return -1;
    }
    PyObject *lock = Py_NewRef(rt->lock);
    if (state_lock_acquire(lock) < 0) {
        Py_DECREF(lock);
        Py_DECREF(rq);
        Py_DECREF(ctx);
        return -1;
    }
    /* S held. */
    int flags = self->flags;
    if (ack) {
        flags &= ~F_INVOKING;
    }
    if ((flags & (F_INVOKING | F_DESTROYED | F_QUEUED)) || (nticks == 0 && (flags & F_PENDING)) ||
        rt->closed != Py_False || rt->trace != Py_None || rt->wheel == NULL ||
        !PyObject_TypeCheck(rt->wheel, &Wheel_Type) || rq->fifo == NULL || rq->bit == NULL) {
        /* A refusal, a replacement or a traced runtime: nothing written yet. */
        int released = state_lock_release(lock);
        Py_DECREF(lock);
        Py_DECREF(rq);
        Py_DECREF(ctx);
        if (released < 0) {
            return -1;
        }
        return 0;
    }
    if (nticks == 0 && kcont_extra(self) == NULL) { /* where commits are counted: MemoryError */
        release_keeping_error(lock);
        Py_DECREF(lock);
        Py_DECREF(rq);
        Py_DECREF(ctx);
        return -1;
    }
    PyObject *replaced_ctx = NULL; /* the context replaced, released after S */
    PyObject *dropped = NULL;           /* likewise */
    PyObject *old_rq = self->rq;
    self->rq = (PyObject *)rq;
    Py_INCREF(rq);
    if (nticks) {
        /* A capture holding the very same values as the last one shares its
         * object (see the reference): a pending timer costs no Context. */
        PyObject *cached = rt->ctx_cache;
        int same = 0;
        if (cached != NULL && cached != Py_None) {
            Py_ssize_t n1 = PyObject_Size(ctx), n2 = PyObject_Size(cached);
            if (n1 < 0 || n2 < 0) {
                goto error_locked;
            }
            if (n1 == 0 && n2 == 0) {
                same = 1;
            }
            else if (n1 == n2) {
                PyObject *r = PyObject_CallFunctionObjArgs(kg.same_values, ctx, cached, NULL);
                if (r == NULL) {
                    goto error_locked;
                }
                same = r == Py_True;
                Py_DECREF(r);
            }
        }
        if (same) {
            dropped = ctx; /* the fresh copy goes; the cached one is used */
            ctx = cached;
            Py_INCREF(ctx);
        }
        else {
            dropped = rt->ctx_cache; /* may be NULL */
            Py_INCREF(ctx);
            rt->ctx_cache = ctx;
        }
        replaced_ctx = self->ctx;
        self->ctx = ctx; /* takes our reference */
        ctx = NULL;
        WheelObject *wheel = (WheelObject *)rt->wheel;
        long long deadline;
        if (rt->clock == NULL || rt->clock == Py_None) {
            deadline = wheel->now + nticks;
        }
        else {
            PyObject *now_obj = PyObject_CallNoArgs(rt->clock);
            if (now_obj == NULL) {
                goto error_locked;
            }
            long long now = PyLong_AsLongLong(now_obj);
            Py_DECREF(now_obj);
            if (now == -1 && PyErr_Occurred()) {
                goto error_locked;
            }
            deadline = now + nticks;
            if (deadline <= wheel->now) {
                deadline = wheel->now + 1;
            }
        }
        if (wheel_arm(wheel, self, deadline) < 0) {
            goto error_locked;
        }
        self->flags = (flags & ~F_EXPIRED) | F_PENDING | F_SHARED_CTX;
        rq->armed += 1;
        if (deadline < rt->timer_wake) {
            PyObject *deadline_obj = PyLong_FromLongLong(deadline);
            if (deadline_obj == NULL) {
                goto error_locked;
            }
            PyObject *stack[2] = {(PyObject *)rt, deadline_obj};
            PyObject *r = PyObject_VectorcallMethod(kg.str_kick_timer, stack, 2, NULL);
            Py_DECREF(deadline_obj);
            if (r == NULL) {
                goto error_locked;
            }
            Py_DECREF(r);
        }
    }
    else {
        /* Immediate: the softint/workqueue path.  The context is this
         * scheduling's own copy, run as is by the dispatcher. */
        replaced_ctx = self->ctx;
        self->ctx = ctx; /* takes our reference */
        ctx = NULL;
        self->flags = (flags & ~F_SHARED_CTX) | F_EXPIRED | F_INVOKING | F_QUEUED;
        self->extra->commits += 1;
        PyObject *stack[2] = {rq->fifo, (PyObject *)self};
        PyObject *r = Py_TYPE(rq->fifo) == (PyTypeObject *)kg.deque_type
                          ? PyObject_Vectorcall(kg.deque_append, stack, 2, NULL)
                          : PyObject_CallMethodOneArg(rq->fifo, kg.str_append, (PyObject *)self);
        if (r == NULL) {
            goto error_locked;
        }
        Py_DECREF(r);
        rq->scheduled += 1;
        Py_ssize_t depth = PyObject_Size(rq->fifo);
        if (depth < 0) {
            goto error_locked;
        }
        if (depth > rq->depth_hwm) {
            rq->depth_hwm = depth;
        }
        if (rq_update_ready(rq, 0) < 0) {
            goto error_locked;
        }
        if (rt->kick != NULL && rt->kick != Py_None) {
            r = PyObject_CallOneArg(rt->kick, (PyObject *)rq);
            if (r == NULL) {
                goto error_locked;
            }
            Py_DECREF(r);
        }
    }
    if (state_lock_release(lock) < 0) {
        goto error;
    }
    Py_DECREF(lock);
    Py_XDECREF(old_rq);
    Py_XDECREF(replaced_ctx);
    Py_XDECREF(dropped);
    Py_DECREF(rq);
    return 1;

error_locked:
    release_keeping_error(lock);
error:
    Py_DECREF(lock);
    Py_XDECREF(old_rq);
    Py_XDECREF(replaced_ctx);
    Py_XDECREF(dropped);
    Py_XDECREF(ctx);
    Py_DECREF(rq);
    return -1;

}

PyObject *
kcont_schedule_method(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    KContObject *self = (KContObject *)op;
    PyObject *nticks_obj = NULL, *cpu = Py_None, *ack_obj = Py_False;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);

    if (nargs > 2) {
        goto reference;
    }
    if (nargs >= 1) {
        nticks_obj = args[0];
    }
    if (nargs >= 2) {
        cpu = args[1];
    }
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        PyObject *value = args[nargs + i];
        if (nargs < 1 && nticks_obj == NULL && name_is(key, "nticks")) {
            nticks_obj = value;
        }
        else if (nargs < 2 && cpu == Py_None && name_is(key, "cpu")) {
            cpu = value;
        }
        else if (name_is(key, "ack")) {
            ack_obj = value;
        }
        else {
            goto reference; /* unknown or repeated: the reference's TypeError */
        }
    }
    if (cpu != Py_None || (ack_obj != Py_True && ack_obj != Py_False)) {
        goto reference;
    }
    long long nticks = 0;
    if (nticks_obj != NULL) {
        if (!PyLong_CheckExact(nticks_obj)) {
            goto reference;
        }
        int overflow = 0;
        nticks = PyLong_AsLongLongAndOverflow(nticks_obj, &overflow);
        if (overflow || nticks < 0 || nticks >= MAX_TICKS) {
            if (nticks == -1 && PyErr_Occurred()) {
                return NULL;
            }
            goto reference;
        }
    }
    switch (schedule_fast(self, nticks, ack_obj == Py_True)) {
    case 1:
        Py_RETURN_NONE;
    case 0:
        break;
    default:
        return NULL;
    }
reference:
    return call_reference(op, kg.str_schedule_py, args, nargs, kwnames);
}

/* kcont.capi.kcont_schedule(kc, ci, nticks) -> errno: the fast path for an
 * exact Continuation with ci None; everything else (a subclass, which may
 * override schedule; a CPU; a refusal, whose errno the reference computes)
 * goes to the reference function. */
PyObject *
kcont_capi_schedule(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs == 3 && kg.hooks_set && Py_TYPE(args[0]) == (PyTypeObject *)kg.continuation_type &&
        args[1] == Py_None && PyLong_CheckExact(args[2])) {
        int overflow = 0;
        long long nticks = PyLong_AsLongLongAndOverflow(args[2], &overflow);
        if (!overflow && nticks >= 0 && nticks < MAX_TICKS) {
            switch (schedule_fast((KContObject *)args[0], nticks, 0)) {
            case 1:
                return PyLong_FromLong(0);
            case 0:
                break;
            default:
                return NULL;
            }
        }
        else if (nticks == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_Vectorcall(kg.capi_schedule, args, nargs, NULL);
}

/* Continuation.stop for a continuation that is not QUEUED on a runtime that
 * is not tracing (the reference's _stop_locked otherwise, from scratch). */
static PyObject *kcont_stop_method_inner(PyObject *op);

PyObject *
kcont_stop_method(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs || kwnames != NULL) { /* a wrong call: the reference's TypeError */
        return call_reference(op, kg.str_stop_py, args, nargs, kwnames);
    }
    kcont_critical++;
    PyObject *r = kcont_stop_method_inner(op);
    kcont_critical--;
    return r;
}

static PyObject *
kcont_stop_method_inner(PyObject *op)
{
    KContObject *self = (KContObject *)op;
    RuntimeObject *rt = runtime_of(self);
    if (rt == NULL) {
        return PyObject_CallMethodNoArgs(op, kg.str_stop_py);
    }
    PyObject *lock = Py_NewRef(rt->lock);
    if (state_lock_acquire(lock) < 0) {
        Py_DECREF(lock);
        return NULL;
    }
    int flags = self->flags;
    if ((flags & F_QUEUED) || rt->trace != Py_None || self->rq == NULL ||
        !PyObject_TypeCheck(self->rq, &RunQueue_Type) ||
        ((flags & F_PENDING) && (rt->wheel == NULL || !PyObject_TypeCheck(rt->wheel, &Wheel_Type)))) {
        int released = state_lock_release(lock);
        Py_DECREF(lock);
        if (released < 0) {
            return NULL;
        }
        return PyObject_CallMethodNoArgs(op, kg.str_stop_py);
    }
    if (flags & F_PENDING) {
        if (wheel_disarm((WheelObject *)rt->wheel, self) < 0) {
            release_keeping_error(lock);
            Py_DECREF(lock);
            return NULL;
        }
        ((RunQueueObject *)self->rq)->stopped += 1;
        self->flags = flags & ~(F_PENDING | F_EXPIRED);
    }
    else {
        self->flags = flags & ~F_EXPIRED;
    }
    int released = state_lock_release(lock);
    Py_DECREF(lock);
    if (released < 0) {
        return NULL;
    }
    return PyBool_FromLong(flags & F_EXPIRED);
}

static PyObject *kcont_ack_method_inner(PyObject *op);

PyObject *
kcont_ack_method(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs || kwnames != NULL) { /* a wrong call: the reference's TypeError */
        return call_reference(op, kg.str_ack_py, args, nargs, kwnames);
    }
    kcont_critical++;
    PyObject *r = kcont_ack_method_inner(op);
    kcont_critical--;
    return r;
}

static PyObject *
kcont_ack_method_inner(PyObject *op)
{
    KContObject *self = (KContObject *)op;
    RuntimeObject *rt = runtime_of(self);
    if (rt == NULL) {
        return PyObject_CallMethodNoArgs(op, kg.str_ack_py);
    }
    PyObject *lock = Py_NewRef(rt->lock);
    if (state_lock_acquire(lock) < 0) {
        Py_DECREF(lock);
        return NULL;
    }
    int flags = self->flags;
    self->flags = flags & ~F_INVOKING;
    int released = state_lock_release(lock);
    Py_DECREF(lock);
    if (released < 0) {
        return NULL;
    }
    return PyBool_FromLong(flags & F_INVOKING);
}
