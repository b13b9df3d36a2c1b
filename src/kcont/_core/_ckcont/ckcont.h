/* The compiled core of kcont: shared memory layouts and declarations.
 *
 * What it owns
 *     The C layouts of the hot objects (a continuation, a run queue, a CPU, a
 *     workqueue and the runtime's hot fields: module.c), the runtime's state
 *     lock (statelock.c), the per-thread current CPU (module.c), the timer
 *     wheel (cwheel.c), and the fast paths: Continuation.schedule, stop and
 *     ack and kcont.capi.kcont_schedule (schedule.c), and the dispatch
 *     function (dispatch.c).  The pure-Python core (kcont._core, with the
 *     field lists of kcont._core.layout) is the reference: every field here
 *     is exposed to Python under the same name, so the pure code of the slow
 *     paths (halt, flush, destroy, the parking rules, expiry, waiters, traces)
 *     runs unchanged on these objects.
 *
 * The rule of the fast paths
 *     A fast path handles the common case exactly as the reference does, and
 *     hands every other case to the reference itself (the pure-Python method,
 *     kept on the class as ``_py_<name>``) *before* it changes anything:
 *     either before taking the state lock, or after releasing it with nothing
 *     written, so the reference redoes the whole operation from scratch.
 *     Errors and their messages are therefore always the reference's.
 *
 * Transition table (the rows of kcont/_core/continuation.py that are here)
 *
 *     event                  fast path                        else: reference
 *     ---------------------  -------------------------------  ----------------
 *     schedule(nticks=0)     not INVOKING|DESTROYED|QUEUED|    the whole call
 *                            PENDING, open, untraced:
 *                            set EXPIRED|INVOKING|QUEUED,
 *                            clear SHARED_CTX, commits++,
 *                            enqueue, mark ready, kick
 *     schedule(nticks>0)     not INVOKING|DESTROYED|QUEUED,    the whole call
 *                            open, untraced: arm or re-arm,
 *                            set PENDING|SHARED_CTX, clear
 *                            EXPIRED, armed++, kick the timer
 *     stop()                 not QUEUED, untraced: disarm if   the whole call
 *                            PENDING (stopped++), clear
 *                            PENDING|EXPIRED
 *     ack()                  clear INVOKING                    (wrong calls)
 *     dispatch begins        QUEUED -> RUNNING, runner,        a traced or
 *                            release, started = commits,       instrumented
 *                            fired                             runtime
 *     dispatch ends          clear RUNNING; INVOKING unless    halts, destroys,
 *                            QUEUED again; invoked++,          waiters, parked
 *                            exceptions++                      sub-queues
 *
 * Locking (the same as the pure core)
 *     S, the runtime's state lock (``rt._lock``: a StateLock, or any lock
 *     with acquire/release), guards every mutable field below; the immutable
 *     ones (a run queue's ``wq``, ``rt``, ``cpu``, ``band``; a CPU's ``rt``
 *     and ``index``) are written once, before the object is shared.  A fast
 *     path reads and writes ``flags`` only under S.  S is never held across
 *     a call of user code: a continuation's function, an exception handler
 *     and waiter callbacks run with it released.  No user object is released
 *     under S where its last reference may go (a replaced context waits in a
 *     local; dispatch keeps the continuation it ran until S is released).
 *     Python functions that a fast path calls with S held are marked
 *     ``@ki.protected``, and a fast path counts itself in ``kcont_critical``
 *     (per thread) while it runs, so a KeyboardInterrupt never lands between
 *     a transition and its wake-up (kcont._core.ki).
 *     Lock order: S -> a kcont.Mutex's own lock (tried under S, released
 *     without S), as the reference.
 *     Free-threaded CPython: every write is under S and S is a real lock,
 *     but some hints are read without S through borrowed references (the
 *     ready masks a dispatch looks at first) and the module does not declare
 *     itself free of the GIL (no Py_mod_gil slot), so CPython enables the GIL
 *     when it is imported there.
 */
#ifndef KCONT_CKCONT_H
#define KCONT_CKCONT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

/* The calling thread is inside a critical section of a fast path: the
 * KeyboardInterrupt handler (kcont._core.ki) then defers an interrupt to the
 * caller's next line.  Zero while a fast path calls user code. */
#if defined(_MSC_VER)
#define KCONT_TLS __declspec(thread)
#else
#define KCONT_TLS _Thread_local
#endif
extern KCONT_TLS int kcont_critical;

/* Flags: the same values as kcont/_core/flags.py (checked at import). */
#define F_PENDING 0x01
#define F_EXPIRED 0x02
#define F_INVOKING 0x04
#define F_QUEUED 0x08
#define F_RUNNING 0x10
#define F_DESTROYED 0x20
#define F_DETACHED 0x40
#define F_SHARED_CTX 0x80

#define NEAR_BITS 10
#define NEAR_SIZE (1 << NEAR_BITS)
#define NEAR_MASK (NEAR_SIZE - 1)

struct KList;

/* The fields of a continuation that most never need: allocated the first
 * time one of them leaves its default (an immediate schedule or an expiry
 * counts a commit; a dispatch sets the runner), so a timer that is armed and
 * re-armed and never fires costs none of them.  NULL objects read as None. */
typedef struct {
    PyObject *name;       /* name */
    PyObject *fired;      /* _fired: int or None */
    PyObject *runner;     /* _runner: thread ident or None */
    PyObject *release;    /* _release: the Mutex to release after the call */
    Py_ssize_t commits;   /* _commits */
    Py_ssize_t started;   /* _started */
} KContExtra;

/* A continuation (kcont.Continuation's fields): 120 bytes with its GC
 * header on a 64-bit build.  ``_wq`` is ``_rq.wq`` (a run queue belongs to
 * one workqueue). */
typedef struct KContObject {
    PyObject_HEAD
    int flags;            /* _flags */
    long long deadline;   /* _deadline */
    PyObject *func;       /* _func */
    PyObject *arg;        /* _arg */
    PyObject *lock;       /* _lock: a kcont.Mutex or None */
    PyObject *rq;         /* _rq: a RunQueue */
    PyObject *ctx;        /* _ctx: a contextvars.Context or None */
    struct KList *wlist;  /* the wheel's list holding it (PENDING), or NULL; ``_bucket`` */
    struct KContObject *wprev, *wnext; /* its neighbours there */
    KContExtra *extra;    /* NULL until needed */
} KContObject;

/* An intrusive, doubly linked list of armed continuations, in arming order;
 * each entry holds one reference to its continuation. */
typedef struct KList {
    KContObject *head, *tail;
} KList;

/* A run queue (kcont._core.runqueue.RunQueue's fields). */
typedef struct {
    PyObject_HEAD
    PyObject *rt, *wq, *cpu, *fifo, *parked, *woken, *pri, *bit;
    Py_ssize_t band;
    Py_ssize_t scheduled, armed, invoked, ebusy, stopped, lock_waits, reentry_waits, late, late_ticks,
        exceptions, depth_hwm, func_ns;
} RunQueueObject;

/* A CPU (kcont._core.runtime.CPU's fields). */
typedef struct {
    PyObject_HEAD
    PyObject *rt, *index, *ready, *rqs;
    PyObject *weakreflist;
} CPUObject;

/* A workqueue (kcont._core.workqueue.Workqueue's fields). */
typedef struct {
    PyObject_HEAD
    PyObject *rt, *rqs, *percpu, *acquired, *band, *bound, *flags, *freed, *name, *order, *predefined, *pri;
    PyObject *weakreflist;
} WorkqueueObject;

/* The timer wheel (cwheel.c): the layout of kcont._core.timerwheel's
 * reference, with intrusive lists instead of dicts as buckets. */
typedef struct {
    PyObject_HEAD
    KList near[NEAR_SIZE];
    uint64_t occupied[NEAR_SIZE / 64]; /* bit i: near[i] is not empty */
    PyObject *far;        /* {epoch: FarBucket} */
    PyObject *epochs;     /* heap (a list, heapq) of far's keys, with stale keys */
    Py_ssize_t stale_room;
    Py_ssize_t count;
    long long now;
} WheelObject;

/* A far bucket: the entries of one epoch after the wheel's current one. */
typedef struct {
    PyObject_HEAD
    KList list;
} FarBucketObject;

extern PyTypeObject FarBucket_Type;

/* The runtime's hot fields (kcont._core.runtime.RuntimeCore). */
typedef struct {
    PyObject_HEAD
    PyObject *lock;             /* _lock */
    PyObject *closed;           /* _closed */
    PyObject *trace;            /* _trace */
    PyObject *kick;             /* _kick */
    PyObject *ctx_cache;        /* _ctx_cache */
    PyObject *wheel;            /* _wheel */
    PyObject *clock;            /* _clock */
    long long timer_wake;       /* _timer_wake */
    Py_ssize_t running;         /* _running */
    Py_ssize_t ended_waiters;   /* _ended_waiters */
    PyObject *callback_waiters; /* _callback_waiters */
    PyObject *callbacks_ready;  /* _callbacks_ready */
    PyObject *halting;          /* _halting */
    PyObject *run_waiters;      /* _run_waiters */
    Py_ssize_t failed;          /* _failed */
    PyObject *time_funcs;       /* _time_funcs */
    PyObject *dropped;          /* _dropped */
} RuntimeObject;

/* The state lock of a runtime on the compiled core (statelock.c). */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    int locked;
    PyObject *weakreflist;
} StateLockObject;

extern PyTypeObject StateLock_Type;
int statelock_acquire(StateLockObject *self, long long timeout_us);
int statelock_release(StateLockObject *self);

extern PyTypeObject KCont_Type;
extern PyTypeObject RunQueue_Type;
extern PyTypeObject CPU_Type;
extern PyTypeObject Workqueue_Type;
extern PyTypeObject Wheel_Type;
extern PyTypeObject Runtime_Type;

/* Module globals, set once at import (module.c). */
typedef struct {
    PyObject *str_schedule_py;     /* "_py_schedule" */
    PyObject *str_stop_py;         /* "_py_stop" */
    PyObject *str_ack_py;          /* "_py_ack" */
    PyObject *str_acquire;         /* "acquire" */
    PyObject *str_release;         /* "release" */
    PyObject *str_append;          /* "append" */
    PyObject *str_try_acquire;     /* "_try_acquire" */
    PyObject *str_take_slow;       /* "_take_slow_locked" */
    PyObject *str_report_exception;/* "_report_exception" */
    PyObject *str_take_dropped;    /* "_take_dropped_locked" */
    PyObject *str_kick_timer;      /* "_kick_timer" */
    PyObject *same_values;         /* continuation._same_values */
    PyObject *heappush;            /* heapq.heappush */
    PyObject *heappop;             /* heapq.heappop */
    PyObject *heapify;             /* heapq.heapify */
    PyObject *py_dispatch;         /* the reference dispatch function */
    PyObject *ended_slow;          /* continuation._ended_slow_locked */
    PyObject *take_ready;          /* waiters.take_ready_locked */
    PyObject *wake_all;            /* waiters.wake_all */
    PyObject *deliver;             /* waiters.deliver */
    PyObject *continuation_type;   /* kcont.Continuation */
    PyObject *capi_schedule;       /* the reference kcont.capi.kcont_schedule */
    PyObject *deque_type;
    PyObject *deque_append;        /* collections.deque.append */
    PyObject *deque_popleft;       /* collections.deque.popleft */
    int hooks_set;
} KContGlobals;

extern KContGlobals kg;

/* The continuation's workqueue (borrowed), or NULL before __init__. */
static inline PyObject *
kcont_wq(KContObject *kc)
{
    return kc->rq == NULL ? NULL : ((RunQueueObject *)kc->rq)->wq;
}

/* Its rarely used fields, allocated on first need (NULL: MemoryError set). */
static inline KContExtra *
kcont_extra(KContObject *kc)
{
    if (kc->extra == NULL) {
        kc->extra = PyMem_Calloc(1, sizeof(KContExtra));
        if (kc->extra == NULL) {
            PyErr_NoMemory();
        }
    }
    return kc->extra;
}

/* State lock helpers: 0 on success, -1 with an exception set. */
static inline int
state_lock_acquire(PyObject *lock)
{
    PyObject *r;
    if (Py_TYPE(lock) == &StateLock_Type) {
        return statelock_acquire((StateLockObject *)lock, -1) < 0 ? -1 : 0;
    }
    r = PyObject_CallMethodNoArgs(lock, kg.str_acquire); /* any other lock (a ForkedLock after fork) */
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static inline int
state_lock_release(PyObject *lock)
{
    PyObject *r;
    if (Py_TYPE(lock) == &StateLock_Type) {
        return statelock_release((StateLockObject *)lock);
    }
    r = PyObject_CallMethodNoArgs(lock, kg.str_release); /* any other lock (a ForkedLock after fork) */
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* The exception being raised, taken (normalized, its traceback attached);
 * NULL if none.  restore_exception() raises it again (stealing it). */
static inline PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(type);
    return value;
#endif
}

static inline void
restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore((PyObject *)Py_TYPE(exc), exc, tb);
    Py_INCREF(Py_TYPE(exc));
#endif
}

/* module.c: a new reference to the calling thread's current CPU, or None. */
PyObject *kcont_current_cpu(void);
extern PyTypeObject ThreadState_Type;

/* schedule.c */
PyObject *kcont_schedule_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *kcont_ack_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *kcont_stop_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames);
PyObject *kcont_capi_schedule(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
/* rq's bit in the ready masks of the CPUs serving it: set, or ``clear``. */
int rq_update_ready(RunQueueObject *rq, int clear);

/* cwheel.c */
int wheel_arm(WheelObject *wheel, KContObject *kc, long long deadline);
int wheel_disarm(WheelObject *wheel, KContObject *kc);
/* The largest deadline the wheel holds (also the limit of nticks). */
#define MAX_DEADLINE (1LL << 62)

/* dispatch.c */
PyObject *kcont_dispatch(PyObject *module, PyObject *const *args, Py_ssize_t nargs);


#endif
