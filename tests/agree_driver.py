"""Deterministic programs whose output must be identical on both cores.

Run as a child process by ``tests/test_cores_agree.py``, once with
``KCONT_PURE_PYTHON=1`` and once without, with ``sys.executable``::

    python tests/agree_driver.py explore SCENARIO FIRST COUNT MODE   # one digest line per seed
    python tests/agree_driver.py explore-batch < lines                # the same, for lines of those 4 words
    python tests/agree_driver.py explore-dump SCENARIO SEED MODE      # the full record of one seed
    python tests/agree_driver.py ops < ops.json                       # one block per operation
    python tests/agree_driver.py objects                              # object behaviour

MODE is ``traced`` (the trace of ``SimRuntime(trace=True)``: a traced runtime
runs the reference paths, so this compares the layouts) or ``fast`` (no trace:
the compiled fast paths run; the record is the log of every function call the
workload makes, with its tick, CPU and flags, plus the final figures and
counters).  Every line printed is free of addresses, thread idents and wall
times, so the two cores' outputs compare with ``==``.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import gc
import hashlib
import json
import pickle
import re
import sys
import weakref
from typing import Any

import kcont
from kcont import capi

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def clean(text: object) -> str:
    return _ADDRESS.sub("0x?", str(text))


def outcome(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {clean(exc)}"


def stats_line(rt: Any, *, bound: bool = True) -> str:
    """The counters, less wall times.  ``bound=False`` leaves out the queues'
    bound counts, which depend on when dropped continuations are collected:
    the pure core keeps one whose function raised in a reference cycle (its
    dispatch frame holds the exception, whose traceback holds the frame) until
    the garbage collector runs, the compiled core frees it at once."""
    stats = rt.stats()
    totals = {k: v for k, v in stats["totals"].items() if k != "func_ns"}
    skipped = (
        ("func_ns", "queue_wait_ns", "run_ns") if bound else ("func_ns", "queue_wait_ns", "run_ns", "bound")
    )
    queues = {
        name: {k: v for k, v in q.items() if k not in skipped} for name, q in sorted(stats["queues"].items())
    }
    cpus = [{k: v for k, v in c.items() if k != "func_ns"} for c in stats["cpus"]]
    return json.dumps(
        {
            "ticks": stats["ticks"],
            "created": stats["continuations_created"],
            "pending": stats["pending_timers"],
            "totals": totals,
            "queues": queues,
            "cpus": cpus,
        },
        sort_keys=True,
    )


# -- a: the explorer's scenarios -------------------------------------------------


def explore_record(scenario: str, seed: int, mode: str) -> list[str]:
    from kcont import explore
    from kcont.stress import workload

    lines: list[str] = []
    original_body = workload.Harness._body
    stats_seen: list[str] = []

    def logged_body(self: Any, slot: Any, variant: int, arg: Any, kc: Any) -> None:
        try:
            cpu: Any = kcont.curcpu().index
        except Exception as exc:
            cpu = type(exc).__name__
        lines.append(f"body s{slot.id} v{variant} {clean(repr(arg))} t{self.rt.ticks} c{cpu} {kc.flags}")
        original_body(self, slot, variant, arg, kc)

    original_finish = workload.Harness.finish

    def logged_finish(self: Any, account: Any, stats: Any) -> Any:
        stats_seen.append(stats_line(self.rt))
        return original_finish(self, account, stats)

    workload.Harness._body = logged_body  # type: ignore[method-assign]
    workload.Harness.finish = logged_finish  # type: ignore[method-assign]
    try:
        result = explore.run_scenario(scenario, seed, trace=(mode == "traced"))
    finally:
        workload.Harness._body = original_body  # type: ignore[method-assign]
        workload.Harness.finish = original_finish  # type: ignore[method-assign]
    out = [f"ok={result.ok}", f"violations={[clean(v) for v in result.violations]}"]
    out.append("figures=" + json.dumps(result.figures, sort_keys=True))
    out.extend(stats_seen)
    if mode == "traced":
        out.extend(
            f"trace {e.tick} {e.event} {e.name} {e.cpu} "
            + (outcome(e.detail) if isinstance(e.detail, BaseException) else clean(repr(e.detail)))
            for e in result.trace
        )
    else:
        out.extend(lines)
    return out


def main_explore(scenario: str, first: int, count: int, mode: str) -> None:
    for seed in range(first, first + count):
        record = explore_record(scenario, seed, mode)
        digest = hashlib.sha1("\n".join(record).encode()).hexdigest()
        print(f"{scenario} {seed} {len(record)} {digest}", flush=False)


# -- b: random operation sequences -------------------------------------------------

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("agree_var", default="unset")


class World:
    """The objects an operation list refers to by index."""

    def __init__(self) -> None:
        self.rt = kcont.SimRuntime(ncpu=3, hz=100, name="agree")
        self.other = kcont.SimRuntime(ncpu=2, hz=100, name="other")
        self.log: list[str] = []
        self.rt.exception_handler = lambda kc, exc: self.log.append(f"handler {kc.name} {outcome(exc)}")
        self.queues = [
            self.rt.workqueue(kcont.PRI_SOFTNET),
            self.rt.workqueue(kcont.PRI_SOFTCLOCK, percpu=True),
            self.rt.workqueue(200),
            self.rt.workqueue(90, percpu=True),
        ]
        self.mutexes = [kcont.Mutex("m0"), kcont.Mutex("m1")]
        self.slots: list[Any] = [None] * 6
        self.created = 0
        self.rearms: dict[str, int] = {}

    def func(self, variant: int) -> Any:
        def fn(arg: Any, kc: Any) -> None:
            try:
                cpu: Any = kcont.curcpu().index
            except Exception as exc:
                cpu = type(exc).__name__
            self.log.append(
                f"run {kc.name} v{variant} arg={arg!r} t{self.rt.ticks} c{cpu} {kc.flags} var={VAR.get()}"
            )
            VAR.set(f"leak-from-{kc.name}")  # must not be seen by the next invocation
            action = arg if isinstance(arg, int) else 0
            try:
                if action == 1:
                    raise ValueError(f"boom from {kc.name}")
                if action == 2:
                    self.log.append(f"  ack={kc.ack()}")
                    kc.schedule(2)
                elif action == 3:
                    kc.schedule(1)
                elif action == 4:
                    kc.schedule(1, ack=True)
                elif action == 5:
                    self.log.append(f"  stop={kc.stop()}")
                elif action == 6:
                    kc.destroy()
                elif action == 7:
                    other = (
                        self.slots[(self.slots.index(kc) + 1) % len(self.slots)] if kc in self.slots else None
                    )
                    if other is not None:
                        self.log.append(f"  other={capi.kcont_schedule(other, None, 0)}")
                elif action == 8:
                    self.log.append(f"  halt={kc.halt()}")
                elif action == 9:
                    rearms = self.rearms[kc.name] = self.rearms.get(kc.name, 0) + 1
                    if rearms <= 3:  # (a bounded loop: flush waits for it)
                        kc.schedule(0, ack=True)
            except ValueError:
                raise
            except Exception as exc:
                self.log.append(f"  in-func {outcome(exc)}")

        fn.__qualname__ = f"fn{variant}"
        return fn

    def cpu(self, spec: Any) -> Any:
        if spec is None:
            return None
        if spec == "foreign":
            return self.other.cpus[0]
        if spec == "bad":
            return "cpu0"
        return self.rt.cpus[spec]

    def value(self, spec: Any) -> Any:
        """Bad inputs arrive as tagged JSON values."""
        if isinstance(spec, list) and spec and spec[0] == "float":
            return float(spec[1])
        if isinstance(spec, list) and spec and spec[0] == "big":
            return 1 << 70
        return spec

    def run(self, op: list[Any]) -> str:
        name, *a = op
        rt = self.rt
        if name == "create":
            i, q, m, variant, arg, how = a
            lock = None if m is None else self.mutexes[m]
            self.created += 1
            label = f"k{i}.{self.created}"
            if how == 0:
                kc = kcont.Continuation(self.queues[q], self.func(variant), arg, lock=lock, name=label)
            elif how == 1:
                kc = rt.continuation(self.queues[q], self.func(variant), arg, lock=lock, name=label)
            else:
                kc = capi.kcont_create(self.queues[q], lock, self.func(variant), arg, 0)
                kc.name = label
            self.slots[i] = kc
            return repr(kc)
        if name == "create_bad":
            which = a[0]
            if which == 0:
                return repr(kcont.Continuation("q", self.func(0)))  # type: ignore[arg-type]
            if which == 1:
                return repr(kcont.Continuation(self.queues[0], 42))  # type: ignore[arg-type]
            if which == 2:
                return repr(kcont.Continuation(self.queues[0], self.func(0), lock=object()))  # type: ignore[arg-type]
            if which == 3:
                return repr(kcont.Continuation(self.queues[0], self.func(0), name=5))  # type: ignore[arg-type]
            return repr(capi.kcont_create(self.queues[0], None, self.func(0), None, 3))
        if name == "var":
            VAR.set(a[0])
            return "set"
        if name == "step":
            ran = rt.step(self.cpu(a[0]))
            return "none" if ran is None else ran.name
        if name == "advance":
            return repr(rt.advance(self.value(a[0])))
        if name == "idle":
            return repr(rt.run_until_idle(200))
        if name == "hold":
            mutex = self.mutexes[a[0]]
            if mutex.owned():
                mutex.release()
                return "released"
            return repr(mutex.acquire(False))
        if name == "shutdown":
            for mutex in self.mutexes:
                if mutex.owned():
                    mutex.release()
            return clean(repr(rt.shutdown(cancel=bool(a[0]))))
        if name == "acquire_temp":
            wq = capi.kcont_workqueue_acquire(a[0], a[1])
            self.queues.append(wq)
            return repr(wq)
        if name == "release_temp":
            if len(self.queues) <= 4:
                return "no temp"
            return repr(capi.kcont_workqueue_release(self.queues[-1]))
        kc = self.slots[a[0]]
        if kc is None:
            return "no continuation"
        rest = a[1:]
        if name == "schedule":
            nticks, cpu, ack = rest
            kwargs = {} if ack is None else {"ack": ack}
            kc.schedule(self.value(nticks), self.cpu(cpu), **kwargs)
            return "ok"
        if name == "schedule_kw":
            return repr(kc.schedule(nticks=self.value(rest[0])))
        if name == "capi_schedule":
            return repr(capi.kcont_schedule(kc, self.cpu(rest[1]), self.value(rest[0])))
        if name == "ack":
            return repr(kc.ack())
        if name == "capi_ack":
            return repr(capi.kcont_ack(kc))
        if name == "stop":
            return repr(kc.stop())
        if name == "capi_stop":
            return repr(capi.kcont_stop(kc))
        if name == "halt":
            return repr(kc.halt())
        if name == "capi_halt":
            return repr(capi.kcont_halt(kc))
        if name == "flush":
            return repr(kc.flush())
        if name == "destroy":
            return repr(kc.destroy())
        if name == "capi_destroy":
            return repr(capi.kcont_destroy(kc))
        if name == "drop":
            self.slots[a[0]] = None
            del kc
            return "dropped"
        if name in ("setarg", "capi_setarg", "setfunc", "capi_setfunc", "setmutex", "capi_setmutex"):
            under, value = rest
            held = kc.mutex if under else None
            if held is not None and not held.acquire(False):
                return "mutex busy"
            try:
                if name == "setarg":
                    return repr(kc.set_arg(value))
                if name == "capi_setarg":
                    return repr(capi.kcont_setarg(kc, value))
                if name == "setfunc":
                    return repr(kc.set_func(self.func(value), value % 10))
                if name == "capi_setfunc":
                    return repr(capi.kcont_setfunc(kc, self.func(value), value % 10))
                lock = None if value is None else self.mutexes[value]
                if name == "setmutex":
                    return repr(kc.set_mutex(lock))
                return repr(capi.kcont_setmutex(kc, lock))
            finally:
                if held is not None and held.owned():
                    held.release()
        if name == "predicates":
            return repr(
                (
                    capi.kcont_pending(kc),
                    capi.kcont_expired(kc),
                    capi.kcont_active(kc),
                    capi.kcont_invoking(kc),
                    kc.queued,
                    kc.running,
                    kc.destroyed,
                    kc.deadline,
                    kc.fired_deadline,
                    None if kc.cpu is None else kc.cpu.index,
                )
            )
        raise AssertionError(f"unknown op {name}")

    def flags(self) -> str:
        return " ".join("-" if kc is None else f"{kc.name}:{kc.flags}" for kc in self.slots)


def main_ops() -> None:
    programs = json.load(sys.stdin)
    for number, ops in enumerate(programs):
        world = World()
        print(f"== program {number}")
        with world.rt:
            for op in ops:
                try:
                    result = world.run(op)
                except Exception as exc:
                    result = outcome(exc)
                print(f"{json.dumps(op)} -> {clean(result)}")
                for entry in world.log:
                    print(f"  {clean(entry)}")
                world.log.clear()
                print(f"  flags {world.flags()}")
                print(f"  stats {stats_line(world.rt, bound=False)}")
            world.slots = [None] * len(world.slots)
            gc.collect()
            print(f"final stats {stats_line(world.rt)}")


# -- c: object behaviour ---------------------------------------------------------


def attempt(label: str, fn: Any) -> None:
    try:
        result = fn()
    except Exception as exc:
        print(f"{label}: {outcome(exc)}")
    else:
        print(f"{label}: {clean(result)}")


def main_objects() -> None:
    rt = kcont.SimRuntime(ncpu=2, hz=100, name="obj")
    other = kcont.SimRuntime(ncpu=1, hz=100, name="other2")
    seen: list[str] = []
    rt.exception_handler = lambda kc, exc: seen.append(f"handler {kc.name} {outcome(exc)}")
    with rt:
        wq = rt.workqueue(kcont.PRI_SOFTNET)
        pq = rt.workqueue(kcont.PRI_SOFTCLOCK, percpu=True)

        def fn(arg: Any, kc: Any) -> None:
            seen.append(f"run {kc.name} arg={arg!r} var={VAR.get()} t{rt.ticks}")
            VAR.set("leaked")
            if arg == "raise":
                raise KeyError("the key")
            if arg == "raise-base":
                raise RuntimeError("runtime trouble")

        class Sub(kcont.Continuation[Any]):
            __slots__ = ("extra",)

            def describe(self) -> str:
                return f"sub {self.name}"

        sub = Sub(wq, fn, 1, name="sub")
        sub.extra = 5
        attempt("subclass repr", lambda: repr(sub))
        attempt("subclass method", sub.describe)
        attempt("subclass schedule", lambda: (sub.schedule(), rt.run_until_idle(), seen[-1])[2])

        class Plain(kcont.Continuation[Any]):
            pass

        attempt("subclass with dict", lambda: (setattr(Plain(wq, fn, name="plain"), "x", 1), "set")[1])

        def define(what: str) -> Any:
            body = {what: lambda self, other: True} if what == "__eq__" else {what: lambda self: 1}
            return type("Bad", (kcont.Continuation,), body)

        attempt("subclass __eq__", lambda: define("__eq__"))
        attempt("subclass __hash__", lambda: define("__hash__"))

        kc = rt.continuation(wq, fn, None, name="obj1")
        attempt("weakref", lambda: type(weakref.ref(kc)).__name__)
        attempt("weakref sub", lambda: type(weakref.ref(sub)).__name__)
        attempt("copy", lambda: copy.copy(kc))
        attempt("deepcopy", lambda: copy.deepcopy(kc))
        attempt("pickle", lambda: pickle.dumps(kc))
        attempt("pickle sub", lambda: pickle.dumps(sub))
        attempt("repr idle", lambda: repr(kc))
        attempt("dir public", lambda: sorted(n for n in dir(kc) if not n.startswith("_")))
        attempt("hash is id", lambda: hash(kc) == id(kc) >> 4 or hash(kc) == hash(object.__hash__(kc)))
        attempt("eq", lambda: (kc == kc, kc == sub, kc != sub))
        attempt("set attribute", lambda: setattr(kc, "nope", 1))
        attempt("set name", lambda: (setattr(kc, "name", "renamed"), repr(kc))[1])
        attempt("set name bad", lambda: setattr(kc, "name", 5))
        kc.name = "obj1"

        # contextvars: immediate and timer paths, no leak between invocations
        token = VAR.set("immediate")
        kc.schedule(0)
        VAR.reset(token)
        rt.run_until_idle()
        token = VAR.set("timer")
        kc.schedule(3)
        VAR.reset(token)
        rt.advance(3)
        kc.schedule(0)  # no value set: the default, not the previous run's
        rt.run_until_idle()
        token = VAR.set("shared-a")
        kc.schedule(2)
        sub.schedule(2)  # the same values: a shared capture, run as a copy
        VAR.reset(token)
        rt.advance(2)
        attempt("context after runs", VAR.get)

        # exception handler reports
        kc.set_arg("raise")
        kc.schedule(0)
        rt.run_until_idle()
        kc.set_arg("raise-base")
        kc.schedule(1)
        rt.advance(1)
        kc.set_arg(None)

        # every bad argument of schedule
        bad_calls = {
            "nticks str": lambda: kc.schedule("1"),
            "nticks float": lambda: kc.schedule(1.5),
            "nticks None": lambda: kc.schedule(None),
            "nticks bool": lambda: kc.schedule(True),
            "nticks negative": lambda: kc.schedule(-1),
            "nticks big negative": lambda: kc.schedule(-(1 << 70)),
            "nticks index": lambda: kc.schedule(_Index()),
            "cpu str": lambda: kc.schedule(0, "cpu"),
            "cpu int": lambda: kc.schedule(0, 0),
            "cpu shared": lambda: kc.schedule(0, rt.cpus[0]),
            "cpu foreign": lambda: kc.schedule(0, other.cpus[0]),
            "ack str": lambda: kc.schedule(0, ack="yes"),
            "ack int": lambda: kc.schedule(0, ack=1),
            "too many": lambda: kc.schedule(0, None, False),
            "unknown kw": lambda: kc.schedule(0, when=1),
            "nticks twice": lambda: kc.schedule(0, nticks=1),
            "percpu foreign": lambda: pk.schedule(0, other.cpus[0]),
            "percpu negative with cpu": lambda: pk.schedule(-3, rt.cpus[1]),
            "percpu ok": lambda: (pk.schedule(1, rt.cpus[1]), pk.cpu.index)[1],
            "percpu kw": lambda: (pk.schedule(nticks=2, cpu=rt.cpus[0], ack=False), pk.cpu.index)[1],
            "busy": lambda: (kc.schedule(0), kc.schedule(0)),
            "busy timer": lambda: kc.schedule(4),
            "ack then": lambda: (kc.ack(), kc.schedule(4), kc.flags)[2],
            "ack kw": lambda: (kc.schedule(0, ack=True), kc.flags)[1],
        }
        pk = rt.continuation(pq, fn, None, name="pk")
        for label, call in bad_calls.items():
            attempt(f"schedule {label}", call)
        rt.run_until_idle()
        rt.advance(5)
        kc.destroy()
        attempt("schedule destroyed", lambda: kc.schedule(0))
        attempt("schedule destroyed timer", lambda: kc.schedule(2))
        attempt("ack destroyed", kc.ack)
        attempt("capi destroyed", lambda: capi.kcont_schedule(kc, None, 0))
        attempt("capi busy", lambda: (capi.kcont_schedule(pk, None, 0), capi.kcont_schedule(pk, None, 0)))
        attempt("capi shared cpu", lambda: capi.kcont_schedule(sub, rt.cpus[0], 0))
        attempt("capi negative", lambda: capi.kcont_schedule(sub, None, -2))
        attempt("capi bad type", lambda: capi.kcont_schedule(sub, None, "x"))
        rt.run_until_idle()
        attempt("repr destroyed", lambda: repr(kc))
        rt.shutdown()
        attempt("schedule shut down", lambda: sub.schedule(0))
        attempt("schedule shut down timer", lambda: sub.schedule(1))
        attempt("capi shut down", lambda: capi.kcont_schedule(sub, None, 0))
        attempt("create shut down", lambda: rt.continuation(wq, fn, name="late"))
    for entry in seen:
        print(clean(entry))


def main_objects_more() -> None:
    """Subclasses overriding schedule or adding a weak reference slot,
    exceptions that are not Exceptions, re-entry, other callables."""
    rt = kcont.SimRuntime(ncpu=2, hz=100, name="more")
    log: list[str] = []
    rt.exception_handler = lambda kc, exc: log.append(f"handler {type(exc).__name__}")
    with rt:
        wq = rt.workqueue(kcont.PRI_SOFTNET)

        class Weak(kcont.Continuation[Any]):
            __slots__ = ("__weakref__",)

        attempt("weak slot", lambda: type(weakref.ref(Weak(wq, lambda a, k: None, name="w"))).__name__)

        class Logged(kcont.Continuation[Any]):
            def schedule(self, nticks: int = 0, cpu: Any = None, *, ack: bool = False) -> None:
                log.append(f"Logged.schedule {nticks}")
                super().schedule(nticks, cpu, ack=ack)

        s = Logged(wq, lambda a, k: log.append(f"ran {a}"), 1, name="s")
        attempt(
            "overridden schedule",
            lambda: (s.schedule(0), rt.run_until_idle(), s.ack(), s.schedule(2), rt.advance(2), list(log))[
                -1
            ],
        )
        for exc_type in (KeyboardInterrupt, SystemExit, GeneratorExit, StopIteration, MemoryError):

            def raiser(a: Any, k: Any, exc_type: Any = exc_type) -> None:
                raise exc_type("x")

            kc = rt.continuation(wq, raiser, name=exc_type.__name__)
            kc.schedule(0)
            try:
                result: Any = (rt.run_until_idle(), kc.flags, log[-1:])
            except BaseException as exc:  # compared, whatever it is
                result = outcome(exc)
            print(f"{exc_type.__name__}: {result}")
            attempt(f"{exc_type.__name__} after", lambda kc=kc: (kc.flags, rt.run_until_idle(), kc.flags))

        def reenter(a: Any, k: Any) -> None:
            attempt("step inside", rt.step)
            attempt("idle inside", rt.run_until_idle)

        rt.continuation(wq, reenter, name="re").schedule(0)
        rt.continuation(wq, lambda a, k: log.append("other ran"), name="o").schedule(0)
        attempt("reenter", lambda: (rt.run_until_idle(), log[-2:]))
        partial = rt.continuation(wq, functools.partial(lambda x, a, k: log.append(f"partial {x} {a}"), 7), 3)
        attempt("partial", lambda: (partial.schedule(0), rt.run_until_idle(), log[-1], repr(partial)))
        builtin = rt.continuation(wq, print, "builtin func", name="b")
        attempt("builtin", lambda: (builtin.schedule(0), rt.run_until_idle(), builtin.flags))
        attempt("stats", lambda: stats_line(rt, bound=False))


class _Index:
    def __index__(self) -> int:
        return 2


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "explore":
        main_explore(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif command == "explore-batch":  # lines "SCENARIO FIRST COUNT MODE" on stdin
        for line in sys.stdin.read().splitlines():
            scenario, first, count, mode = line.split()
            main_explore(scenario, int(first), int(count), mode)
    elif command == "explore-dump":
        print("\n".join(explore_record(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
    elif command == "ops":
        main_ops()
    elif command == "objects":
        main_objects()
        main_objects_more()
    elif command == "implementation":
        print(kcont.implementation)
    else:
        raise SystemExit(f"unknown command {command}")
