/* kcont._core._ckcont: the compiled core's module and its object layouts.
 *
 * What it owns
 *     The base types whose C layout the hot paths share (see ckcont.h): each
 *     exposes its fields to Python under the names of the pure core's
 *     ``__slots__`` (kcont._core.layout), so the pure-Python code of the slow
 *     paths runs unchanged on them.  ``_setup`` receives, once, the Python
 *     functions the fast paths hand rare cases to.
 *
 * Invariants
 *     A continuation is created DETACHED (as the reference, whose ``__del__``
 *     then has nothing to undo until ``__init__`` bound it); object fields
 *     are NULL until set, and read as AttributeError, as an unset slot.
 *
 * Locking: see ckcont.h.  Nothing here takes a lock.
 */
#include "ckcont.h"

KContGlobals kg;
KCONT_TLS int kcont_critical = 0;

static PyObject *
in_critical_section(PyObject *module, PyObject *unused)
{
    return PyBool_FromLong(kcont_critical > 0);
}

#define OBJ(type, field, name) {name, T_OBJECT_EX, offsetof(type, field), 0, NULL}
#define SSIZE(type, field, name) {name, T_PYSSIZET, offsetof(type, field), 0, NULL}

/* -- Continuation ---------------------------------------------------------- */

static PyObject *
kcont_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    KContObject *self = (KContObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->flags = F_DETACHED;
    }
    return (PyObject *)self;
}

static int
kcont_traverse(KContObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->func);
    Py_VISIT(self->arg);
    Py_VISIT(self->lock);
    Py_VISIT(self->rq);
    Py_VISIT(self->ctx);
    if (self->extra != NULL) {
        Py_VISIT(self->extra->name);
        Py_VISIT(self->extra->fired);
        Py_VISIT(self->extra->runner);
        Py_VISIT(self->extra->release);
    }
    return 0;
}

static int
kcont_clear(KContObject *self)
{
    Py_CLEAR(self->func);
    Py_CLEAR(self->arg);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->rq);
    Py_CLEAR(self->ctx);
    if (self->extra != NULL) {
        Py_CLEAR(self->extra->name);
        Py_CLEAR(self->extra->fired);
        Py_CLEAR(self->extra->runner);
        Py_CLEAR(self->extra->release);
    }
    return 0;
}

static void
kcont_dealloc(KContObject *self)
{
    PyObject_GC_UnTrack(self);
    kcont_clear(self);
    PyMem_Free(self->extra);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef kcont_members[] = {
    {"_flags", T_INT, offsetof(KContObject, flags), 0, NULL},
    {"_deadline", T_LONGLONG, offsetof(KContObject, deadline), 0, NULL},
    OBJ(KContObject, func, "_func"),
    OBJ(KContObject, arg, "_arg"),
    OBJ(KContObject, lock, "_lock"),
    OBJ(KContObject, rq, "_rq"),
    OBJ(KContObject, ctx, "_ctx"),
    {NULL},
};

/* ``_bucket``: the reference's wheel bucket; here True while armed in the
 * compiled wheel, None otherwise (assigning None, as __init__ does, is a
 * no-op). */
static PyObject *
kcont_get_bucket(KContObject *self, void *closure)
{
    return Py_NewRef(self->wlist != NULL ? Py_True : Py_None);
}

static int
kcont_set_bucket(KContObject *self, PyObject *value, void *closure)
{
    if (value != Py_None) {
        PyErr_SetString(PyExc_TypeError, "the compiled timer wheel owns _bucket");
        return -1;
    }
    return 0;
}

/* ``_wq``: its run queue's workqueue.  Set once, by __init__, before ``_rq``:
 * the run queue is then the workqueue's first. */
static PyObject *
kcont_get_wq(KContObject *self, void *closure)
{
    PyObject *wq = kcont_wq(self);
    if (wq == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_wq");
        return NULL;
    }
    return Py_NewRef(wq);
}

static int
kcont_set_wq(KContObject *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyObject_TypeCheck(value, &Workqueue_Type)) {
        PyErr_SetString(PyExc_TypeError, "_wq must be a workqueue");
        return -1;
    }
    if (kcont_wq(self) == value) {
        return 0;
    }
    PyObject *rqs = ((WorkqueueObject *)value)->rqs;
    if (rqs == NULL || !PyTuple_Check(rqs) || PyTuple_GET_SIZE(rqs) == 0) {
        PyErr_SetString(PyExc_TypeError, "_wq: a workqueue without run queues");
        return -1;
    }
    Py_XSETREF(self->rq, Py_NewRef(PyTuple_GET_ITEM(rqs, 0)));
    return 0;
}

/* The fields kept in the lazily allocated KContExtra: object fields (closure:
 * their offset there) and counters. */
static PyObject *
kcont_get_extra_object(KContObject *self, void *closure)
{
    PyObject *value = self->extra == NULL ? NULL : *(PyObject **)((char *)self->extra + (size_t)closure);
    return Py_NewRef(value != NULL ? value : Py_None);
}

static int
kcont_set_extra_object(KContObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        value = Py_None;
    }
    if (self->extra == NULL && value == Py_None) {
        return 0;
    }
    if (kcont_extra(self) == NULL) {
        return -1;
    }
    PyObject **slot = (PyObject **)((char *)self->extra + (size_t)closure);
    Py_XSETREF(*slot, value == Py_None ? NULL : Py_NewRef(value));
    return 0;
}

static PyObject *
kcont_get_extra_count(KContObject *self, void *closure)
{
    Py_ssize_t value = self->extra == NULL ? 0 : *(Py_ssize_t *)((char *)self->extra + (size_t)closure);
    return PyLong_FromSsize_t(value);
}

static int
kcont_set_extra_count(KContObject *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "cannot delete a counter");
        return -1;
    }
    Py_ssize_t count = PyLong_AsSsize_t(value);
    if (count == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (self->extra == NULL && count == 0) {
        return 0;
    }
    if (kcont_extra(self) == NULL) {
        return -1;
    }
    *(Py_ssize_t *)((char *)self->extra + (size_t)closure) = count;
    return 0;
}

#define EXTRA_OBJECT(name, field)                                                                         \
    {name, (getter)kcont_get_extra_object, (setter)kcont_set_extra_object, NULL,                         \
     (void *)offsetof(KContExtra, field)}
#define EXTRA_COUNT(name, field)                                                                          \
    {name, (getter)kcont_get_extra_count, (setter)kcont_set_extra_count, NULL, (void *)offsetof(KContExtra, field)}

static PyGetSetDef kcont_getset[] = {
    {"_bucket", (getter)kcont_get_bucket, (setter)kcont_set_bucket, NULL, NULL},
    {"_wq", (getter)kcont_get_wq, (setter)kcont_set_wq, NULL, NULL},
    EXTRA_OBJECT("name", name),
    EXTRA_OBJECT("_fired", fired),
    EXTRA_OBJECT("_runner", runner),
    EXTRA_OBJECT("_release", release),
    EXTRA_COUNT("_commits", commits),
    EXTRA_COUNT("_started", started),
    {NULL},
};

static PyMethodDef kcont_methods[] = {
    {"_c_schedule", (PyCFunction)(void (*)(void))kcont_schedule_method, METH_FASTCALL | METH_KEYWORDS,
     "schedule(nticks=0, cpu=None, *, ack=False): the compiled fast path of Continuation.schedule."},
    {"_c_stop", (PyCFunction)(void (*)(void))kcont_stop_method, METH_FASTCALL | METH_KEYWORDS,
     "stop() -> bool: the compiled fast path of Continuation.stop."},
    {"_c_ack", (PyCFunction)(void (*)(void))kcont_ack_method, METH_FASTCALL | METH_KEYWORDS,
     "ack(): clear INVOKING and return its previous value (compiled)."},
    {NULL},
};

PyTypeObject KCont_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.ContinuationFields",
    .tp_basicsize = sizeof(KContObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled layout of a continuation's fields.",
    .tp_new = kcont_new,
    .tp_traverse = (traverseproc)kcont_traverse,
    .tp_clear = (inquiry)kcont_clear,
    .tp_dealloc = (destructor)kcont_dealloc,
    .tp_members = kcont_members,
    .tp_methods = kcont_methods,
    .tp_getset = kcont_getset,
};

/* -- RunQueue -------------------------------------------------------------- */

static int
rq_traverse(RunQueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->rt);
    Py_VISIT(self->wq);
    Py_VISIT(self->cpu);
    Py_VISIT(self->fifo);
    Py_VISIT(self->parked);
    Py_VISIT(self->woken);
    Py_VISIT(self->pri);
    Py_VISIT(self->bit);
    return 0;
}

static int
rq_clear(RunQueueObject *self)
{
    Py_CLEAR(self->rt);
    Py_CLEAR(self->wq);
    Py_CLEAR(self->cpu);
    Py_CLEAR(self->fifo);
    Py_CLEAR(self->parked);
    Py_CLEAR(self->woken);
    Py_CLEAR(self->pri);
    Py_CLEAR(self->bit);
    return 0;
}

static void
rq_dealloc(RunQueueObject *self)
{
    PyObject_GC_UnTrack(self);
    rq_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef rq_members[] = {
    OBJ(RunQueueObject, rt, "rt"),
    OBJ(RunQueueObject, wq, "wq"),
    OBJ(RunQueueObject, cpu, "cpu"),
    OBJ(RunQueueObject, fifo, "fifo"),
    OBJ(RunQueueObject, parked, "parked"),
    OBJ(RunQueueObject, woken, "woken"),
    OBJ(RunQueueObject, pri, "pri"),
    OBJ(RunQueueObject, bit, "bit"),
    SSIZE(RunQueueObject, band, "band"),
    SSIZE(RunQueueObject, scheduled, "scheduled"),
    SSIZE(RunQueueObject, armed, "armed"),
    SSIZE(RunQueueObject, invoked, "invoked"),
    SSIZE(RunQueueObject, ebusy, "ebusy"),
    SSIZE(RunQueueObject, stopped, "stopped"),
    SSIZE(RunQueueObject, lock_waits, "lock_waits"),
    SSIZE(RunQueueObject, reentry_waits, "reentry_waits"),
    SSIZE(RunQueueObject, late, "late"),
    SSIZE(RunQueueObject, late_ticks, "late_ticks"),
    SSIZE(RunQueueObject, exceptions, "exceptions"),
    SSIZE(RunQueueObject, depth_hwm, "depth_hwm"),
    SSIZE(RunQueueObject, func_ns, "func_ns"),
    {NULL},
};

PyTypeObject RunQueue_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.RunQueueFields",
    .tp_basicsize = sizeof(RunQueueObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled layout of a run queue's fields.",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)rq_traverse,
    .tp_clear = (inquiry)rq_clear,
    .tp_dealloc = (destructor)rq_dealloc,
    .tp_members = rq_members,
};

/* -- CPU ------------------------------------------------------------------- */

static int
cpu_traverse(CPUObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->rt);
    Py_VISIT(self->index);
    Py_VISIT(self->ready);
    Py_VISIT(self->rqs);
    return 0;
}

static int
cpu_clear(CPUObject *self)
{
    Py_CLEAR(self->rt);
    Py_CLEAR(self->index);
    Py_CLEAR(self->ready);
    Py_CLEAR(self->rqs);
    return 0;
}

static void
cpu_dealloc(CPUObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    cpu_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef cpu_members[] = {
    OBJ(CPUObject, rt, "rt"),
    OBJ(CPUObject, index, "index"),
    OBJ(CPUObject, ready, "ready"),
    OBJ(CPUObject, rqs, "rqs"),
    {NULL},
};

PyTypeObject CPU_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.CPUFields",
    .tp_basicsize = sizeof(CPUObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled layout of a CPU's fields.",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)cpu_traverse,
    .tp_clear = (inquiry)cpu_clear,
    .tp_dealloc = (destructor)cpu_dealloc,
    .tp_members = cpu_members,
    .tp_weaklistoffset = offsetof(CPUObject, weakreflist),
};

/* -- Workqueue ------------------------------------------------------------- */

#define WQ_FIELDS(X) X(rt) X(rqs) X(percpu) X(acquired) X(band) X(bound) X(flags) X(freed) X(name) X(order) \
    X(predefined) X(pri)

static int
wq_traverse(WorkqueueObject *self, visitproc visit, void *arg)
{
#define V(f) Py_VISIT(self->f);
    WQ_FIELDS(V)
#undef V
    return 0;
}

static int
wq_clear(WorkqueueObject *self)
{
#define C(f) Py_CLEAR(self->f);
    WQ_FIELDS(C)
#undef C
    return 0;
}

static void
wq_dealloc(WorkqueueObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    wq_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef wq_members[] = {
#define M(f) OBJ(WorkqueueObject, f, #f),
    WQ_FIELDS(M)
#undef M
    {NULL},
};

PyTypeObject Workqueue_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.WorkqueueFields",
    .tp_basicsize = sizeof(WorkqueueObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled layout of a workqueue's fields.",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)wq_traverse,
    .tp_clear = (inquiry)wq_clear,
    .tp_dealloc = (destructor)wq_dealloc,
    .tp_members = wq_members,
    .tp_weaklistoffset = offsetof(WorkqueueObject, weakreflist),
};

/* -- Runtime --------------------------------------------------------------- */

#define RT_FIELDS(X) X(lock) X(closed) X(trace) X(kick) X(ctx_cache) X(wheel) X(clock) X(callback_waiters) \
    X(callbacks_ready) X(halting) X(run_waiters) X(time_funcs) X(dropped)

static int
rt_traverse(RuntimeObject *self, visitproc visit, void *arg)
{
#define V(f) Py_VISIT(self->f);
    RT_FIELDS(V)
#undef V
    return 0;
}

static int
rt_clear(RuntimeObject *self)
{
#define C(f) Py_CLEAR(self->f);
    RT_FIELDS(C)
#undef C
    return 0;
}

static void
rt_dealloc(RuntimeObject *self)
{
    PyObject_GC_UnTrack(self);
    rt_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef rt_members[] = {
#define M(f) OBJ(RuntimeObject, f, "_" #f),
    RT_FIELDS(M)
#undef M
    {"_timer_wake", T_LONGLONG, offsetof(RuntimeObject, timer_wake), 0, NULL},
    SSIZE(RuntimeObject, running, "_running"),
    SSIZE(RuntimeObject, ended_waiters, "_ended_waiters"),
    SSIZE(RuntimeObject, failed, "_failed"),
    {NULL},
};

PyTypeObject Runtime_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.RuntimeFields",
    .tp_basicsize = sizeof(RuntimeObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The compiled layout of a runtime's hot fields.",
    .tp_new = PyType_GenericNew,
    .tp_traverse = (traverseproc)rt_traverse,
    .tp_clear = (inquiry)rt_clear,
    .tp_dealloc = (destructor)rt_dealloc,
    .tp_members = rt_members,
};

/* -- ThreadState ------------------------------------------------------------ */

/* The calling thread's current CPU and entered runtimes (the reference's
 * ``threading.local`` subclass, ``kcont._core.runtime._ThreadState``): kept in
 * the thread's own state dict, which CPython clears when the thread ends, so
 * a lookup costs one dict probe. */
static PyObject *tls_key_cpu, *tls_key_entered;

PyObject *
kcont_current_cpu(void)
{
    PyObject *dict = PyThreadState_GetDict();
    if (dict == NULL) {
        return Py_NewRef(Py_None);
    }
    PyObject *value = PyDict_GetItemWithError(dict, tls_key_cpu);
    if (value == NULL) {
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    }
    return Py_NewRef(value);
}

static PyObject *
tls_get(PyObject *self, void *closure)
{
    PyObject *key = *(PyObject **)closure;
    PyObject *dict = PyThreadState_GetDict();
    if (dict == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *value = PyDict_GetItemWithError(dict, key);
    if (value == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    return Py_NewRef(value);
}

static int
tls_set(PyObject *self, PyObject *value, void *closure)
{
    PyObject *key = *(PyObject **)closure;
    PyObject *dict = PyThreadState_GetDict();
    if (dict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "kcont: no thread state");
        return -1;
    }
    if (value == NULL) {
        if (PyDict_DelItem(dict, key) < 0 && PyErr_ExceptionMatches(PyExc_KeyError)) {
            PyErr_Clear();
        }
        return PyErr_Occurred() ? -1 : 0;
    }
    return PyDict_SetItem(dict, key, value);
}

static PyGetSetDef tls_getset[] = {
    {"cpu", tls_get, tls_set, "The CPU this thread runs on, or None.", &tls_key_cpu},
    {"entered", tls_get, tls_set, "Runtimes this thread entered with `with`, or None.", &tls_key_entered},
    {NULL},
};

PyTypeObject ThreadState_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kcont._core._ckcont.ThreadState",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Per-thread state of kcont: the current CPU and the entered runtimes.",
    .tp_new = PyType_GenericNew,
    .tp_getset = tls_getset,
};

/* -- module ---------------------------------------------------------------- */

/* _setup(hooks: dict[str, object]): the Python functions the fast paths
 * hand rare cases to, and the objects they share with the pure core. */
static PyObject *
ckcont_setup(PyObject *module, PyObject *hooks)
{
    if (!PyDict_Check(hooks)) {
        PyErr_SetString(PyExc_TypeError, "_setup expects a dict");
        return NULL;
    }
#define HOOK(field, key)                                                       \
    do {                                                                       \
        PyObject *value = PyDict_GetItemString(hooks, key);                    \
        if (value != NULL) {                                                   \
            Py_INCREF(value);                                                  \
            Py_XSETREF(kg.field, value);                                       \
        }                                                                      \
    } while (0)
    HOOK(same_values, "same_values");
    HOOK(py_dispatch, "dispatch");
    HOOK(ended_slow, "ended_slow_locked");
    HOOK(take_ready, "take_ready_locked");
    HOOK(wake_all, "wake_all");
    HOOK(deliver, "deliver");
    HOOK(continuation_type, "Continuation");
    HOOK(capi_schedule, "kcont_schedule");
#undef HOOK
    kg.hooks_set = kg.same_values != NULL && kg.py_dispatch != NULL && kg.ended_slow != NULL &&
                   kg.take_ready != NULL && kg.wake_all != NULL && kg.deliver != NULL &&
                   kg.continuation_type != NULL;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_in_critical_section", (PyCFunction)in_critical_section, METH_NOARGS,
     "True while the calling thread runs a critical section of the compiled core."},
    {"_setup", (PyCFunction)ckcont_setup, METH_O, "Receive the pure core's helpers (once, at import)."},
    {"kcont_schedule", (PyCFunction)(void (*)(void))kcont_capi_schedule, METH_FASTCALL,
     "kcont_schedule(kc, ci, nticks) -> errno: the compiled kcont.capi.kcont_schedule."},
    {"dispatch", (PyCFunction)(void (*)(void))kcont_dispatch, METH_FASTCALL,
     "dispatch(rt, cpu, bands, limit=1): the compiled dispatch function."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "kcont._core._ckcont",
    .m_doc = "The compiled core of kcont (see kcont._core.layout and kcont.implementation).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC
PyInit__ckcont(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (intern(&kg.str_schedule_py, "_py_schedule") < 0 || intern(&kg.str_stop_py, "_py_stop") < 0 ||
        intern(&kg.str_ack_py, "_py_ack") < 0 || intern(&kg.str_acquire, "acquire") < 0 ||
        intern(&kg.str_release, "release") < 0 || intern(&kg.str_append, "append") < 0 ||
        intern(&kg.str_try_acquire, "_try_acquire") < 0 || intern(&kg.str_take_slow, "_take_slow_locked") < 0 ||
        intern(&kg.str_report_exception, "_report_exception") < 0 ||
        intern(&kg.str_take_dropped, "_take_dropped_locked") < 0 || intern(&kg.str_kick_timer, "_kick_timer") < 0 ||
        intern(&tls_key_cpu, "kcont._core.cpu") < 0 || intern(&tls_key_entered, "kcont._core.entered") < 0) {
        goto fail;
    }
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL) {
        goto fail;
    }
    kg.deque_type = PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    if (kg.deque_type == NULL) {
        goto fail;
    }
    kg.deque_append = PyObject_GetAttrString(kg.deque_type, "append");
    kg.deque_popleft = PyObject_GetAttrString(kg.deque_type, "popleft");
    PyObject *heapq = PyImport_ImportModule("heapq");
    if (heapq == NULL) {
        goto fail;
    }
    kg.heappush = PyObject_GetAttrString(heapq, "heappush");
    kg.heappop = PyObject_GetAttrString(heapq, "heappop");
    kg.heapify = PyObject_GetAttrString(heapq, "heapify");
    Py_DECREF(heapq);
    if (kg.deque_append == NULL || kg.deque_popleft == NULL || kg.heappush == NULL || kg.heappop == NULL ||
        kg.heapify == NULL) {
        goto fail;
    }
    PyTypeObject *types[] = {&KCont_Type,     &RunQueue_Type, &CPU_Type,         &Workqueue_Type,
                             &Wheel_Type,     &Runtime_Type,  &ThreadState_Type, &StateLock_Type, &FarBucket_Type};
    const char *names[] = {"ContinuationFields", "RunQueueFields", "CPUFields", "WorkqueueFields",
                           "TimerWheel",   "RuntimeFields",  "ThreadState", "StateLock", "FarBucket"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            goto fail;
        }
        Py_INCREF(types[i]);
        if (PyModule_AddObject(module, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            goto fail;
        }
    }
    if (PyModule_AddIntConstant(module, "NEAR_BITS", NEAR_BITS) < 0 ||
        PyModule_AddIntConstant(module, "PENDING", F_PENDING) < 0 ||
        PyModule_AddIntConstant(module, "EXPIRED", F_EXPIRED) < 0 ||
        PyModule_AddIntConstant(module, "INVOKING", F_INVOKING) < 0 ||
        PyModule_AddIntConstant(module, "QUEUED", F_QUEUED) < 0 ||
        PyModule_AddIntConstant(module, "RUNNING", F_RUNNING) < 0 ||
        PyModule_AddIntConstant(module, "DESTROYED", F_DESTROYED) < 0 ||
        PyModule_AddIntConstant(module, "DETACHED", F_DETACHED) < 0 ||
        PyModule_AddIntConstant(module, "SHARED_CTX", F_SHARED_CTX) < 0) {
        goto fail;
    }
    return module;
fail:
    Py_DECREF(module);
    return NULL;
}
