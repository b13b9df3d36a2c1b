/* The dispatch function, compiled.
 *
 * What it owns
 *     The same sequence as the reference (kcont/_core/dispatch.py, whose
 *     docstring is the specification): pick the next startable continuation
 *     of the CPU's run queues, highest priority first, with the run queue's
 *     fast path (a plain FIFO while nothing is parked) in C and its parking
 *     rules in the reference (``RunQueue._take_slow_locked``); QUEUED ->
 *     RUNNING; call ``func(arg, kc)`` in the context with no lock held; end
 *     and account the invocation; release its lock; wake callback waiters;
 *     report an exception.  The rare consequences of an end (halts, destroys,
 *     flush waiters, parked sub-queues) are the reference's
 *     ``_ended_slow_locked``.  A runtime that records a trace or watches its
 *     functions with instruments is dispatched by the reference entirely.
 *
 * Locking
 *     As the reference: S taken once to start and once per invocation, never
 *     across ``func``; a Mutex is released, callback waiters woken and
 *     exceptions reported with S released.  Continuations run by the call are
 *     kept in a list until S is released for good, so none dies under S.
 */
#include "ckcont.h"

#ifndef _WIN32
#include <time.h>
#else
#include <windows.h>
#endif

static long long
perf_counter_ns(void)
{
#ifndef _WIN32
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#else
    LARGE_INTEGER count, frequency;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&frequency);
    return (long long)((double)count.QuadPart * 1e9 / (double)frequency.QuadPart);
#endif
}

/* RunQueue.take_locked: a new reference to the continuation that starts, with
 * its lock taken; NULL and no exception if none; NULL and an exception on
 * error. */
static PyObject *
take_locked(RunQueueObject *rq)
{
    PyObject *fifo = rq->fifo;
    if (PyDict_GET_SIZE(rq->parked) == 0 && PyDict_GET_SIZE(rq->woken) == 0 && PyObject_Size(fifo) > 0) {
        /* Fast path: nothing waits, so ready order is plain FIFO. */
        PyObject *head = PySequence_GetItem(fifo, 0);
        if (head == NULL) {
            return NULL;
        }
        if (!PyObject_TypeCheck(head, &KCont_Type)) {
            Py_DECREF(head);
            goto slow;
        }
        KContObject *kc = (KContObject *)head;
        int startable = !(kc->flags & F_RUNNING);
        if (startable && kc->lock != NULL && kc->lock != Py_None) {
            PyObject *r = PyObject_CallMethodNoArgs(kc->lock, kg.str_try_acquire);
            if (r == NULL) {
                Py_DECREF(head);
                return NULL;
            }
            startable = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (startable < 0) {
                Py_DECREF(head);
                return NULL;
            }
        }
        if (startable) {
            PyObject *popped = PyObject_Vectorcall(kg.deque_popleft, &fifo, 1, NULL);
            if (popped == NULL) {
                Py_DECREF(head);
                return NULL;
            }
            Py_DECREF(popped);
            if (PyObject_Size(fifo) == 0 && rq_update_ready(rq, 1) < 0) {
                Py_DECREF(head);
                return NULL;
            }
            return head;
        }
        Py_DECREF(head);
    }
slow:;
    PyObject *kc = PyObject_CallMethodNoArgs((PyObject *)rq, kg.str_take_slow);
    if (kc == Py_None) {
        Py_DECREF(kc);
        return NULL;
    }
    return kc;
}

static Py_ssize_t
lowest_bit(PyObject *mask, int *error)
{
    int overflow = 0;
    long long m = PyLong_AsLongLongAndOverflow(mask, &overflow);
    if (!overflow && m > 0) {
        return __builtin_ctzll((unsigned long long)m);
    }
    if (m == -1 && PyErr_Occurred()) {
        *error = 1;
        return -1;
    }
    /* More than 63 queues in a band: (mask & -mask).bit_length() - 1. */
    PyObject *neg = PyNumber_Negative(mask);
    if (neg == NULL) {
        *error = 1;
        return -1;
    }
    PyObject *low = PyNumber_And(mask, neg);
    Py_DECREF(neg);
    if (low == NULL) {
        *error = 1;
        return -1;
    }
    PyObject *bits = PyObject_CallMethod(low, "bit_length", NULL);
    Py_DECREF(low);
    if (bits == NULL) {
        *error = 1;
        return -1;
    }
    Py_ssize_t n = PyLong_AsSsize_t(bits);
    Py_DECREF(bits);
    if (n == -1 && PyErr_Occurred()) {
        *error = 1;
        return -1;
    }
    return n - 1;
}

/* A container field is non-empty (a dict or list, as the reference keeps;
 * anything else by its truth, which for these never runs user code). */
static int
is_true(PyObject *value)
{
    if (value == NULL || value == Py_None) {
        return 0;
    }
    if (PyDict_CheckExact(value)) {
        return PyDict_GET_SIZE(value) != 0;
    }
    if (PyList_CheckExact(value)) {
        return PyList_GET_SIZE(value) != 0;
    }
    return PyObject_IsTrue(value) == 1;
}

PyObject *
kcont_dispatch(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!kg.hooks_set) {
        PyErr_SetString(PyExc_RuntimeError, "kcont: the compiled core was not set up");
        return NULL;
    }
    if (nargs < 3 || nargs > 4 || !PyObject_TypeCheck(args[0], &Runtime_Type) ||
        !PyObject_TypeCheck(args[1], &CPU_Type) || (nargs == 4 && !PyLong_CheckExact(args[3]))) {
        return PyObject_Vectorcall(kg.py_dispatch, args, nargs, NULL);
    }
    RuntimeObject *rt = (RuntimeObject *)args[0];
    CPUObject *cpu = (CPUObject *)args[1];
    if (rt->trace != Py_None || (rt->time_funcs != Py_True && rt->time_funcs != Py_False) || rt->lock == NULL ||
        cpu->ready == NULL || !PyList_Check(cpu->ready) || cpu->rqs == NULL || !PyTuple_Check(cpu->rqs)) {
        return PyObject_Vectorcall(kg.py_dispatch, args, nargs, NULL);
    }
    Py_ssize_t limit = 1;
    if (nargs == 4) {
        limit = PyLong_AsSsize_t(args[3]);
        if (limit == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    /* Every band index, checked once: anything odd is the reference's. */
    PyObject *bands_seq = PySequence_Fast(args[2], "bands must be a sequence");
    if (bands_seq == NULL) {
        PyErr_Clear();
        return PyObject_Vectorcall(kg.py_dispatch, args, nargs, NULL);
    }
    Py_ssize_t nbands = PySequence_Fast_GET_SIZE(bands_seq);
    Py_ssize_t band_of[8];
    int valid = nbands <= 8;
    for (Py_ssize_t i = 0; valid && i < nbands; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(bands_seq, i);
        band_of[i] = PyLong_CheckExact(item) ? PyLong_AsSsize_t(item) : -1;
        if (band_of[i] == -1 && PyErr_Occurred()) {
            PyErr_Clear();
        }
        valid = band_of[i] >= 0 && band_of[i] < PyList_GET_SIZE(cpu->ready) && band_of[i] < PyTuple_GET_SIZE(cpu->rqs);
    }
    Py_DECREF(bands_seq);
    if (!valid) {
        return PyObject_Vectorcall(kg.py_dispatch, args, nargs, NULL);
    }
    PyObject *ready = cpu->ready;
    int any = 0;
    for (Py_ssize_t i = 0; i < nbands; i++) {
        int set = PyObject_IsTrue(PyList_GET_ITEM(ready, band_of[i]));
        if (set < 0) {
            return NULL;
        }
        if (set) {
            any = 1;
            break;
        }
    }
    if (!any) {
        if (is_true(rt->callbacks_ready)) {
            /* Fired by a stop or a replacement: a CPU with time wakes them. */
            PyObject *r = PyObject_CallOneArg(kg.deliver, (PyObject *)rt);
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
        }
        Py_RETURN_NONE;
    }
    PyObject *lock = rt->lock;
    Py_INCREF(lock);
    Py_INCREF(rt);
    int time_funcs = rt->time_funcs == Py_True;
    /* The continuation run last (returned), and the one before it, which is
     * released only once S is: a continuation nobody else references dies
     * with our reference, and the __del__ of its function, argument or
     * context values (user code) must not run with S held. */
    PyObject *last = NULL, *previous = NULL;
    PyObject *me = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    PyObject *error = NULL; /* the exception that ends the call, if any */
    if (me == NULL) {
        Py_DECREF(lock);
        Py_DECREF(rt);
        return NULL;
    }
    kcont_critical++; /* but around the calls of user code below */
    if (state_lock_acquire(lock) < 0) {
        kcont_critical--;
        Py_DECREF(me);
        Py_DECREF(lock);
        Py_DECREF(rt);
        return NULL;
    }
    /* S held from here to the end, but where released explicitly. */
    while (limit) {
        PyObject *taken = NULL;
        for (Py_ssize_t i = 0; i < nbands && taken == NULL; i++) {
            Py_ssize_t band = band_of[i];
            PyObject *rqs = PyTuple_GET_ITEM(cpu->rqs, band);
            PyObject *mask = PyList_GET_ITEM(ready, band);
            while (PyObject_IsTrue(mask) == 1) {
                /* Lowest set bit: the highest-priority queue with work.  A
                 * take that finds nothing startable clears its bit. */
                int failed = 0;
                Py_ssize_t rank = lowest_bit(mask, &failed);
                if (failed) {
                    goto error_locked;
                }
                if (!PyList_Check(rqs) || rank < 0 || rank >= PyList_GET_SIZE(rqs)) {
                    PyErr_SetString(PyExc_SystemError, "kcont: ready mask out of range");
                    goto error_locked;
                }
                PyObject *rq = PyList_GET_ITEM(rqs, rank);
                if (!PyObject_TypeCheck(rq, &RunQueue_Type)) {
                    PyErr_SetString(PyExc_SystemError, "kcont: malformed run queue");
                    goto error_locked;
                }
                taken = take_locked((RunQueueObject *)rq);
                if (taken == NULL && PyErr_Occurred()) {
                    goto error_locked;
                }
                if (taken != NULL) {
                    break;
                }
                mask = PyList_GET_ITEM(ready, band);
            }
        }
        if (taken == NULL) {
            break;
        }
        if (!PyObject_TypeCheck(taken, &KCont_Type)) {
            Py_DECREF(taken);
            PyErr_SetString(PyExc_SystemError, "kcont: a run queue held a foreign entry");
            goto error_locked;
        }
        KContObject *kc = (KContObject *)taken;
        previous = last; /* released below, with S released */
        last = taken;
        limit -= 1;
        /* begin_locked: QUEUED -> RUNNING. */
        int flags = kc->flags;
        KContExtra *extra = kcont_extra(kc); /* there since the commit was counted */
        PyObject *fired = (flags & F_SHARED_CTX) ? PyLong_FromLongLong(kc->deadline) : NULL;
        if (extra == NULL || ((flags & F_SHARED_CTX) && fired == NULL)) {
            goto error_locked;
        }
        kc->flags = (flags & ~F_QUEUED) | F_RUNNING;
        Py_XSETREF(extra->runner, Py_NewRef(me));
        Py_XSETREF(extra->release, (kc->lock == NULL || kc->lock == Py_None) ? NULL : Py_NewRef(kc->lock));
        extra->started = extra->commits;
        Py_XSETREF(extra->fired, fired);
        PyObject *ctx = (flags & F_SHARED_CTX) ? PyContext_Copy(kc->ctx) : Py_XNewRef(kc->ctx);
        if (ctx == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_SystemError, "kcont: a queued continuation has no context");
            }
            goto error_locked;
        }
        rt->running += 1;
        PyObject *func = Py_NewRef(kc->func);
        PyObject *arg = Py_NewRef(kc->arg);
        RunQueueObject *rq = (RunQueueObject *)Py_NewRef(kc->rq);
        if (state_lock_release(lock) < 0) {
            Py_DECREF(ctx);
            Py_DECREF(func);
            Py_DECREF(arg);
            Py_DECREF(rq);
            error = take_exception();
            goto done_unlocked;
        }
        Py_CLEAR(previous);
        /* func(arg, kc) in the context, no lock of ours held. */
        PyObject *failure = NULL;
        long long started = time_funcs ? perf_counter_ns() : 0;
        if (PyContext_Enter(ctx) < 0) {
            failure = take_exception();
        }
        else {
            PyObject *call_args[2] = {arg, (PyObject *)kc};
            kcont_critical--;
            PyObject *result = PyObject_Vectorcall(func, call_args, 2, NULL);
            kcont_critical++;
            if (result == NULL) {
                failure = take_exception();
            }
            Py_XDECREF(result);
            if (PyContext_Exit(ctx) < 0) {
                PyObject *exc = take_exception();
                if (failure == NULL) {
                    failure = exc;
                }
                else {
                    Py_XDECREF(exc);
                }
            }
        }
        long long elapsed = time_funcs ? perf_counter_ns() - started : 0;
        /* Our references to what func may have replaced go before S is taken. */
        Py_DECREF(ctx);
        Py_DECREF(func);
        Py_DECREF(arg);
        PyObject *held = Py_XNewRef(kc->extra->release); /* only this thread changes it while RUNNING */
        if (state_lock_acquire(lock) < 0) {
            Py_XDECREF(held);
            Py_DECREF(rq);
            Py_XDECREF(failure);
            error = take_exception();
            goto done_unlocked;
        }
        rt->running -= 1; /* before the end: an idle waiter it fires must see it */
        /* end_locked. */
        int ended = kc->flags & ~F_RUNNING;
        if (!(ended & F_QUEUED)) {
            ended &= ~F_INVOKING;
        }
        kc->flags = ended;
        Py_CLEAR(kc->extra->runner);
        Py_CLEAR(kc->extra->release);
        int fired_waiters = 0;
        if (is_true(rt->run_waiters) || is_true(rt->halting) || rt->ended_waiters != 0 ||
            (ended & F_DESTROYED)) {
            PyObject *flags_obj = PyLong_FromLong(ended);
            PyObject *r = flags_obj == NULL ? NULL
                                            : PyObject_CallFunctionObjArgs(kg.ended_slow, (PyObject *)rt,
                                                                           (PyObject *)kc, flags_obj, NULL);
            Py_XDECREF(flags_obj);
            if (r == NULL) {
                Py_XDECREF(held);
                Py_DECREF(rq);
                Py_XDECREF(failure);
                goto error_locked;
            }
            fired_waiters = PyObject_IsTrue(r) == 1;
            Py_DECREF(r);
        }
        rq->invoked += 1;
        if (elapsed) {
            rq->func_ns += elapsed;
        }
        if (held != NULL && held != Py_None) {
            /* Released only now, so whoever takes it next sees the invocation
             * ended, and never under S (a release wakes parked sub-queues). */
            if (state_lock_release(lock) < 0) {
                Py_DECREF(held);
                Py_DECREF(rq);
                Py_XDECREF(failure);
                error = take_exception();
                goto done_unlocked;
            }
            PyObject *r = PyObject_CallMethodNoArgs(held, kg.str_release);
            if (r == NULL) {
                PyObject *exc = take_exception();
                PyObject *context = PyException_GetContext(exc);
                if (failure != NULL && context == NULL) {
                    PyException_SetContext(exc, failure); /* chained as a `finally` clause would */
                }
                else {
                    Py_XDECREF(failure);
                }
                Py_XDECREF(context);
                failure = exc;
            }
            else {
                Py_DECREF(r);
            }
            if (state_lock_acquire(lock) < 0) {
                Py_DECREF(held);
                Py_DECREF(rq);
                Py_XDECREF(failure);
                error = take_exception();
                goto done_unlocked;
            }
        }
        Py_XDECREF(held);
        if (failure != NULL) {
            rq->exceptions += 1;
            rt->failed += 1;
        }
        Py_DECREF(rq);
        if (fired_waiters) {
            /* Waiters of this end: woken once it is fully accounted, before
             * the next one starts, and with no lock held. */
            PyObject *woken = PyObject_CallOneArg(kg.take_ready, (PyObject *)rt);
            if (woken == NULL) {
                Py_XDECREF(failure);
                goto error_locked;
            }
            if (state_lock_release(lock) < 0) {
                Py_DECREF(woken);
                Py_XDECREF(failure);
                error = take_exception();
                goto done_unlocked;
            }
            kcont_critical--;
            PyObject *r = PyObject_CallOneArg(kg.wake_all, woken);
            kcont_critical++;
            Py_DECREF(woken);
            PyObject *exc = r == NULL ? take_exception() : NULL;
            Py_XDECREF(r);
            if (state_lock_acquire(lock) < 0) {
                Py_XDECREF(exc);
                Py_XDECREF(failure);
                error = take_exception();
                goto done_unlocked;
            }
            if (exc != NULL) {
                Py_XDECREF(failure);
                restore_exception(exc);
                goto error_locked;
            }
        }
        if (failure != NULL) {
            if (state_lock_release(lock) < 0) {
                Py_DECREF(failure);
                error = take_exception();
                goto done_unlocked;
            }
            PyObject *stack[3] = {(PyObject *)rt, (PyObject *)kc, failure};
            kcont_critical--;
            PyObject *r = PyObject_VectorcallMethod(kg.str_report_exception, stack, 3, NULL);
            kcont_critical++;
            Py_DECREF(failure);
            PyObject *exc = r == NULL ? take_exception() : NULL;
            Py_XDECREF(r);
            if (state_lock_acquire(lock) < 0) {
                Py_XDECREF(exc);
                error = take_exception();
                goto done_unlocked;
            }
            if (exc != NULL) {
                restore_exception(exc);
                goto error_locked;
            }
        }
    }
    goto finish_locked;

error_locked:
    error = take_exception();
finish_locked:;
    {
        PyObject *dropped = PyObject_CallMethodNoArgs((PyObject *)rt, kg.str_take_dropped);
        if (dropped == NULL) {
            PyObject *exc = take_exception();
            if (error == NULL) {
                error = exc;
            }
            else {
                Py_XDECREF(exc);
            }
        }
        if (state_lock_release(lock) < 0) {
            PyObject *exc = take_exception();
            if (error == NULL) {
                error = exc;
            }
            else {
                Py_XDECREF(exc);
            }
        }
        Py_XDECREF(dropped); /* dies with S released */
    }
done_unlocked:;
    kcont_critical--;
    Py_XDECREF(previous);
    PyObject *result = NULL;
    if (error == NULL) {
        result = last != NULL ? last : Py_NewRef(Py_None);
    }
    else {
        Py_XDECREF(last);
    }
    Py_DECREF(me);
    Py_DECREF(lock);
    Py_DECREF(rt);
    if (error != NULL) {
        restore_exception(error);
        return NULL;
    }
    return result;
}
