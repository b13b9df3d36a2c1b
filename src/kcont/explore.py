"""Deterministic exploration of interleavings on the simulated runtime:
``python -m kcont explore``.

Each *scenario* is a small workload (a few continuations, a few locks, one
kind of race made likely); each *seed* draws one interleaving of it: which
CPU steps next (``SimRuntime(seed=...)``), which operation the driver makes
between steps and ticks, and what the continuations' functions and the
*actor* continuations (functions that operate on the others from another
CPU, so that operations land between the dispatches of a tick) do.  Every run
is checked by the stress harness's ledger (:class:`kcont.stress.Harness`):
the same invariants as the threaded stress run, plus exact start order for
every ``{wq, lock, ci}`` (one thread runs everything here).

A failing seed is printed with the command that replays it, with its trace::

    python -m kcont.explore --scenario halt_vs_rearm --seed 17 --trace
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._cli import (
    EXIT_INTERRUPTED,
    StopRequest,
    add_output_options,
    int_in,
    progress_wanted,
    text_stream,
    write_json,
)
from ._core.continuation import Continuation
from ._core.workqueue import WQ_PERCPU
from .errors import BusyError, DestroyedError, SimDeadlockError
from .interleave import CooperativeMutex, InterleavedSim, ThreadStuckError
from .sim import SimRuntime
from .stress import DEFAULT_WEIGHTS, Harness, StressConfig

__all__ = [
    "SCENARIOS",
    "ExploreResult",
    "RunResult",
    "Scenario",
    "add_arguments",
    "explore",
    "main",
    "run",
    "run_scenario",
]


@dataclass(frozen=True)
class Scenario:
    """A workload whose interleavings a seed draws."""

    name: str
    doc: str
    continuations: tuple[int, int] = (2, 5)  # drawn in this range
    locks: int = 2
    steps: tuple[int, int] = (60, 160)  # driver decisions
    actors: int = 2  # continuations that operate on the others
    p_driver_op: float = 0.35  # a driver decision is an operation (else a step or a tick)
    p_tick: float = 0.25  # ... a tick (else one step)
    config: dict[str, Any] = field(default_factory=dict)  # StressConfig overrides
    weights: dict[str, float] = field(default_factory=dict)  # operation weights (default: all)
    special: str | None = None  # a driver routine run in addition
    # A scenario of its own (real threads interleaved at preemption points,
    # kcont.interleave): run as runner(scenario name, seed, trace).
    runner: Callable[[str, int, bool], RunResult] | None = None


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "stop_vs_expiry",
            "short timers stopped from the driver and from actors on other CPUs, "
            "before, at and after their expiry",
            weights={"schedule_timer": 5, "schedule_now": 1, "stop": 5, "halt": 1},
            config={"max_nticks": 2, "p_rearm": 0.2},
            p_tick=0.4,
        ),
        Scenario(
            "halt_vs_rearm",
            "functions that acknowledge and re-arm themselves, halted from outside and from inside",
            weights={"schedule_now": 3, "schedule_timer": 2, "halt": 4, "stop": 1},
            config={"p_rearm": 0.7, "p_self_halt": 0.1, "max_nticks": 2},
        ),
        Scenario(
            "destroy_inside",
            "functions that destroy themselves (after re-arming, sometimes), destroys "
            "from outside, creates in their place",
            weights={"schedule_now": 3, "schedule_timer": 2, "destroy": 2, "stop": 1, "temp_queue": 1},
            config={"p_self_destroy": 0.25, "p_rearm": 0.4, "max_nticks": 3},
        ),
        Scenario(
            "setmutex_handover",
            "locked continuations handing their lock over inside their function, setmutex "
            "and setarg from outside, start order per {wq, lock, ci}",
            locks=3,
            weights={"schedule_now": 5, "schedule_timer": 1, "setmutex": 3, "setarg": 2, "setfunc": 1},
            config={"p_locked": 1.0, "p_handover": 0.4, "p_rearm": 0.2, "max_nticks": 2},
        ),
        Scenario(
            "release_bound",
            "temporary queues acquired and released while continuations are bound "
            "(EBUSY, then freed), schedules on them",
            weights={"temp_queue": 4, "destroy": 2, "schedule_now": 3, "schedule_timer": 2, "queue_churn": 2},
            config={"temp_priorities": (5, 199, 210)},
        ),
        Scenario(
            "stop_lock_held",
            "the driver holds a continuation lock while it stops, halts and re-arms the "
            "continuations using it and the runtime steps: none may start meanwhile",
            locks=2,
            weights={"schedule_now": 3, "schedule_timer": 2, "stop": 2},
            config={"p_locked": 0.8, "max_nticks": 2},
            special="lock_held",
        ),
        Scenario(
            "exceptions",
            "functions raising at every point of their life (start, after re-arm, holding "
            "another lock, at the end)",
            config={"p_raise": 0.35, "p_rearm": 0.4, "p_extra_lock": 0.3},
        ),
        Scenario(
            "ordering",
            "many immediate schedulings of continuations sharing queues and locks, on every "
            "CPU: start order per {wq, lock, ci} is checked exactly",
            continuations=(5, 9),
            locks=2,
            weights={"schedule_now": 8, "schedule_timer": 3, "stop": 1, "setmutex": 1},
            config={"p_locked": 0.5, "p_rearm": 0.3, "max_nticks": 2, "p_handover": 0.1},
            p_driver_op=0.5,
        ),
        Scenario(
            "mixed",
            "every operation, every function behaviour",
            continuations=(3, 7),
            weights=dict(DEFAULT_WEIGHTS),
        ),
    )
}


@dataclass
class RunResult:
    """One scenario at one seed."""

    scenario: str
    seed: int
    ok: bool
    violations: list[str]
    figures: dict[str, int]
    trace: list[Any]

    def replay_command(self) -> str:
        return f"python -m kcont.explore --scenario {self.scenario} --seed {self.seed} --trace"


@dataclass
class ExploreResult:
    """Every run of an exploration."""

    runs: int = 0
    seeds: int = 0
    scenarios: list[str] = field(default_factory=list)
    failures: list[RunResult] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def run_scenario(name: str, seed: int, *, trace: bool = False) -> RunResult:
    """Run scenario ``name`` with interleaving ``seed`` and check it."""
    sc = SCENARIOS[name]
    if sc.runner is not None:
        return sc.runner(name, seed, trace)
    rng = random.Random(f"{name}:{seed}")  # strings seed deterministically
    ncpu = rng.randint(1, 3)
    rt = SimRuntime(ncpu=ncpu, hz=100, seed=seed, trace=trace, name=f"{name}{seed}")
    weights = dict(sc.weights) if sc.weights else dict(DEFAULT_WEIGHTS)
    overrides = dict(sc.config)
    config = StressConfig(
        threads=0,
        continuations=rng.randint(*sc.continuations),
        duration=0,
        seed=rng.randrange(1 << 30),
        ncpu=ncpu,
        locks=sc.locks,
        acquired_queues=((200, 0), (90, WQ_PERCPU)),
        weights=weights,
        shutdown_cancel=rng.random() < 0.5,
        lock_timeout=0,
        **overrides,
    )
    with rt:
        harness = Harness(rt, config, sim_rng=rng)
        actors = _make_actors(rt, harness, rng, sc.actors)
        try:
            _drive(rt, harness, rng, sc, actors)
            harness.stopping = True
            for actor in actors:
                _destroy_actor(harness, actor)
            rt.run_until_idle(10_000)
            harness._reap(harness._counters_for_thread())
            harness.final_check_before_shutdown()
            harness.check_release_busy()
            harness.closing = True
            account = rt.shutdown(cancel=bool(config.shutdown_cancel))
            harness.finish(account, rt.stats())
            harness.teardown()
        except SimDeadlockError as exc:
            harness.violation(None, f"simulated deadlock: {exc}")
    return RunResult(
        scenario=name,
        seed=seed,
        ok=harness.violation_count == 0,
        violations=harness.violations,
        figures=harness.figures(),
        trace=rt.trace if trace else [],
    )


def _make_actors(rt: SimRuntime, harness: Harness, rng: random.Random, n: int) -> list[Continuation[Any]]:
    """Continuations whose function makes one random operation on the others
    (from whichever CPU runs it) and sometimes re-arms itself."""
    actors: list[Continuation[Any]] = []
    # From inside a function, the simulator cannot wait: flush steps the
    # runtime, so it is the driver's (halt and destroy never wait there).
    ops = [op for op, w in harness.cfg.weights.items() if w > 0 and op != "flush"]
    op_weights = [harness.cfg.weights[op] for op in ops]

    def act(index: int, kc: Continuation[Any]) -> None:
        harness.note_external(kc.wq, invoked=1)
        if harness.stopping:
            return
        harness.producer_op(rng, rng.choices(ops, op_weights)[0])
        if rng.random() < 0.5:
            kc.ack()
            _schedule_actor(harness, kc, rng.randint(0, 2))

    for i in range(n):
        wq = rng.choice(harness.queues)
        actors.append(rt.continuation(wq, act, i, name=f"actor{i}"))
    return actors


def _schedule_actor(harness: Harness, actor: Continuation[Any], nticks: int) -> None:
    actor.schedule(nticks)
    if nticks:
        harness.note_external(actor.wq, armed=1)


def _destroy_actor(harness: Harness, actor: Continuation[Any]) -> None:
    if actor.pending or actor.queued:
        harness.note_external(actor.wq, stopped=1)
    actor.destroy()


def _drive(
    rt: SimRuntime, harness: Harness, rng: random.Random, sc: Scenario, actors: list[Continuation[Any]]
) -> None:
    held: Any = None  # a lock the driver holds (scenario stop_lock_held)
    for _ in range(rng.randint(*sc.steps)):
        r = rng.random()
        if sc.special == "lock_held" and rng.random() < 0.1:
            if held is None:
                held = rng.choice(harness.locks)
                if not held.acquire(False):
                    held = None
            else:
                held.release()
                held = None
        if r < sc.p_driver_op:
            harness.producer_op(rng)
        elif r < sc.p_driver_op + 0.1 and actors:
            actor = rng.choice(actors)
            if not actor.invoking and not actor.pending:
                _schedule_actor(harness, actor, rng.randint(0, 2))
        elif r < sc.p_driver_op + 0.1 + sc.p_tick:
            rt.advance(1)
        else:
            rt.step()
    if held is not None:
        held.release()


# -- interleaved scenarios: waits against the transitions they wait for -------------
#
# Each runs user threads and the continuations' functions as real threads of an
# InterleavedSim, switched only at preemption points (those inside the core's
# waits included) in an order the seed draws, so that a window between "decide"
# and "register" in a wait, or a transition that satisfies a waiter without
# waking it, is reached deterministically.

_Body = Callable[[InterleavedSim, random.Random, list[str], dict[str, int]], None]


def _run_interleaved(name: str, seed: int, trace: bool, body: _Body, max_steps: int = 3000) -> RunResult:
    rng = random.Random(f"{name}:{seed}")
    sim = InterleavedSim(ncpu=rng.randint(1, 2), hz=100, seed=seed, trace=trace, name=f"{name}{seed}")
    violations: list[str] = []
    figures = {"interleaved_starts": 0, "interleaved_ops": 0, "interleaved_steps": 0}
    stuck = False
    with sim:
        try:
            body(sim, rng, violations, figures)
            figures["interleaved_steps"] = sim.run_threads(max_steps, drain_ticks=8)
            violations.extend(f"{who} did not finish in {max_steps} steps" for who in sim.unfinished())
        except ThreadStuckError as exc:
            stuck = True
            violations.append(f"stuck: {exc}")
        except SimDeadlockError as exc:
            violations.append(f"simulated deadlock: {exc}")
        violations.extend(sim.lost_wakeups)
        violations.extend(f"{who} raised {exc!r}" for who, exc in sim.errors())
        if not stuck:
            sim.close()
            sim.shutdown(cancel=True)
    return RunResult(
        scenario=name,
        seed=seed,
        ok=not violations,
        violations=violations,
        figures=figures,
        trace=sim.trace if trace else [],
    )


def _self_rearming(
    sim: InterleavedSim,
    rng: random.Random,
    violations: list[str],
    figures: dict[str, int],
    what: list[str],
    always: Callable[[], bool] = lambda: False,
) -> Continuation[Any]:
    """A continuation whose function acknowledges and re-arms itself (now or
    in a tick or two; every time, and at once, while ``always()``, so that an
    invocation is always committed), with preemption points
    around the re-arm.  Once ``what`` names a halt that returned, no
    invocation may start."""

    def fn(arg: None, kc: Continuation[Any]) -> None:
        figures["interleaved_starts"] += 1
        if what:
            violations.append(f"an invocation started after {what[0]} returned (tick {sim.ticks})")
        sim.yield_now("fn: started")
        keep_committed = always()
        if keep_committed or rng.random() < 0.85:
            try:
                kc.schedule(0 if keep_committed else rng.choice((0, 0, 1, 2)), ack=True)
                figures["interleaved_ops"] += 1
            except DestroyedError:
                pass  # destroyed meanwhile: re-arming is refused, as documented
            sim.yield_now("fn: re-armed")

    wq = sim.predefined(rng.choice(("wq_softnet", "wq_prilow")))
    return sim.continuation(wq, fn, None, name="selfrearm")


def _halt_body(destroy: bool) -> _Body:
    def body(sim: InterleavedSim, rng: random.Random, violations: list[str], figures: dict[str, int]) -> None:
        what: list[str] = []
        kc = _self_rearming(sim, rng, violations, figures, what)
        interlock = CooperativeMutex(sim, "interlock") if not destroy and rng.random() < 0.5 else None

        def halter() -> None:
            kc.schedule(rng.choice((0, 0, 1)))
            for _ in range(rng.randint(1, 12)):
                sim.yield_now("halter: before")
            if destroy:
                call = "destroy()"
                kc.destroy()
            else:
                call = "halt()" if interlock is None else "halt(interlock)"
                if interlock is not None:
                    interlock.acquire()
                kc.halt(interlock)
            figures["interleaved_ops"] += 1
            if kc.pending or kc.queued or kc.running:
                violations.append(f"{call} returned with the continuation {kc.flags}")
            what.append(call)
            if interlock is not None:
                interlock.release()

        sim.spawn(halter, "halter")

    return body


def _flush_vs_replace(
    sim: InterleavedSim, rng: random.Random, violations: list[str], figures: dict[str, int]
) -> None:
    lock = CooperativeMutex(sim, "L")

    def fn(arg: None, kc: Continuation[Any]) -> None:
        figures["interleaved_starts"] += 1
        sim.yield_now("fn")

    wq = sim.predefined(rng.choice(("wq_softnet", "wq_prilow")))
    kc = sim.continuation(wq, fn, None, lock=lock, name="committed")

    def holder() -> None:
        # Commits an invocation that must wait for the lock it holds.
        lock.acquire()
        try:
            kc.schedule(0)
        except BusyError:
            pass  # the replacer committed one first: that one waits for the lock
        figures["interleaved_ops"] += 1
        for _ in range(rng.randint(0, 10)):
            sim.yield_now("holder")
        lock.release()

    def flusher() -> None:
        for _ in range(rng.randint(0, 4)):
            sim.yield_now("flusher")
        kc.flush()
        figures["interleaved_ops"] += 1

    def replacer() -> None:
        for _ in range(rng.randint(0, 6)):
            sim.yield_now("replacer")
        op = rng.choice(("timer", "timer", "stop", "now"))
        if op == "timer":  # a committed invocation replaced by a timer
            kc.schedule(rng.choice((3, 100_000)), ack=True)
        elif op == "stop":
            kc.stop()
        else:
            kc.schedule(0, ack=True)
        figures["interleaved_ops"] += 1

    for name, fn_ in (("holder", holder), ("flusher", flusher), ("replacer", replacer)):
        sim.spawn(fn_, name)


def _flush_vs_rearm(
    sim: InterleavedSim, rng: random.Random, violations: list[str], figures: dict[str, int]
) -> None:
    what: list[str] = []
    flushed: list[bool] = []
    # The function re-arms itself for as long as the flush waits: a flush that
    # waited for invocations committed after it was called would never return
    # (reported as a user thread that did not finish).
    kc = _self_rearming(sim, rng, violations, figures, what, always=lambda: not flushed)

    def starter() -> None:
        kc.schedule(rng.choice((0, 1)))
        for _ in range(rng.randint(0, 6)):
            sim.yield_now("starter")
        kc.flush()
        flushed.append(True)
        figures["interleaved_ops"] += 1
        kc.halt()
        what.append("halt()")

    sim.spawn(starter, "flusher")


def explore(
    seeds: Sequence[int],
    scenarios: Sequence[str] | None = None,
    *,
    on_failure: Callable[[RunResult], None] | None = None,
    stop_on_failure: bool = False,
) -> ExploreResult:
    """Run every scenario (or those named) at every seed."""
    names = list(scenarios) if scenarios else list(SCENARIOS)
    result = ExploreResult(seeds=len(seeds), scenarios=names)
    started = time.perf_counter()
    for seed in seeds:
        for name in names:
            run_result = run_scenario(name, seed)
            result.runs += 1
            for key, value in run_result.figures.items():
                result.totals[key] = result.totals.get(key, 0) + value
            if not run_result.ok:
                result.failures.append(run_result)
                if on_failure is not None:
                    on_failure(run_result)
                if stop_on_failure:
                    result.seconds = time.perf_counter() - started
                    return result
    result.seconds = time.perf_counter() - started
    return result


for _scenario in (
    Scenario(
        "halt_vs_selfrearm",
        "a function acknowledges and re-arms itself while another thread halts it "
        "(with or without an interlock): halt returns with nothing armed, queued or running, "
        "and nothing starts after it",
        runner=lambda name, seed, trace: _run_interleaved(name, seed, trace, _halt_body(destroy=False)),
    ),
    Scenario(
        "destroy_vs_selfrearm",
        "a function acknowledges and re-arms itself while another thread destroys it",
        runner=lambda name, seed, trace: _run_interleaved(name, seed, trace, _halt_body(destroy=True)),
    ),
    Scenario(
        "flush_vs_replace",
        "an invocation committed while its lock is held, flushed by one thread while another "
        "replaces it with a timer, stops it or re-commits it: the flush wakes as soon as "
        "nothing it waits for is left",
        runner=lambda name, seed, trace: _run_interleaved(name, seed, trace, _flush_vs_replace),
    ),
    Scenario(
        "flush_vs_rearm",
        "a function that re-arms itself, flushed then halted from another thread: the flush "
        "ends, the halt leaves nothing behind",
        runner=lambda name, seed, trace: _run_interleaved(name, seed, trace, _flush_vs_rearm),
    ),
):
    SCENARIOS[_scenario.name] = _scenario


# -- command line --------------------------------------------------------------------

EXPLORE_SCHEMA = "kcont.explore/1"  # the JSON document's format and version
MAX_SEEDS = 10_000_000
MAX_SEED = 2**63 - 1
PROGRESS_INTERVAL = 2.0  # seconds between two progress lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m kcont explore`` (each checked before the run)."""
    parser.add_argument(
        "--seeds",
        type=int_in(1, MAX_SEEDS),
        # A string default goes through ``type`` too: a bad $KCONT_EXPLORE_SEEDS is refused.
        default=os.environ.get("KCONT_EXPLORE_SEEDS", "200"),
        help=f"number of seeds, 1-{MAX_SEEDS} (default: $KCONT_EXPLORE_SEEDS, else 200)",
    )
    parser.add_argument("--first-seed", type=int_in(0, MAX_SEED), default=0, help="first seed (default: 0)")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=None, help="run this one seed (replay)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to explore (repeatable; default: all)",
    )
    parser.add_argument("--trace", action="store_true", help="print the trace of failing runs (or of --seed)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    add_output_options(parser, what="the runs and their failures")


def run(args: argparse.Namespace) -> int:
    """Explore from parsed arguments; prints failing seeds; 0 iff none failed,
    130 if interrupted (Ctrl-C: the seeds explored so far are reported)."""
    text = text_stream(args)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.name:18} {sc.doc}", file=text)
        if args.json:
            listing = {"schema": EXPLORE_SCHEMA, "scenarios": {sc.name: sc.doc for sc in SCENARIOS.values()}}
            write_json(listing, args.json, None if args.json == "-" else text)
        return 0
    if args.seed is not None:
        seeds: Sequence[int] = [args.seed]
    else:
        seeds = range(args.first_seed, args.first_seed + args.seeds)

    def report(failed: RunResult) -> None:
        print(f"FAIL scenario={failed.scenario} seed={failed.seed}", file=text)
        for v in failed.violations:
            print("  " + v.replace("\n", "\n  "), file=text)
        print(f"  replay: {failed.replay_command()}", file=text)
        if args.trace or args.seed is not None:
            again = run_scenario(failed.scenario, failed.seed, trace=True)
            for event in again.trace:
                print(f"    {event}", file=text)

    names = list(args.scenario) if args.scenario else list(SCENARIOS)
    result = ExploreResult(scenarios=names)
    show = progress_wanted(args, text)
    started = time.perf_counter()
    next_report = started + PROGRESS_INTERVAL
    interrupted = False
    with StopRequest() as stop:
        # One seed at a time, so that Ctrl-C and progress act between seeds.
        for seed in seeds:
            if stop.requested:
                interrupted = True
                break
            part = explore([seed], names, on_failure=report)
            result.seeds += 1
            result.runs += part.runs
            result.failures.extend(part.failures)
            for key, value in part.totals.items():
                result.totals[key] = result.totals.get(key, 0) + value
            now = time.perf_counter()
            if show and now >= next_report:
                next_report = now + PROGRESS_INTERVAL
                print(
                    f"  {now - started:5.0f} s  {result.seeds} of {len(seeds)} seeds  {result.runs} runs  "
                    f"{len(result.failures)} failing",
                    file=text,
                    flush=True,
                )
    result.seconds = time.perf_counter() - started
    if args.seed is not None and args.trace and result.ok and not interrupted:
        for name in result.scenarios:
            for event in run_scenario(name, args.seed, trace=True).trace:
                print(f"    {name}: {event}", file=text)
    t = result.totals
    summary = (
        f"kcont explore: {result.seeds} seeds x {len(result.scenarios)} scenarios = {result.runs} runs "
        f"in {result.seconds:.1f} s; "
        f"{t.get('ops', 0) + t.get('fn_ops', 0) + t.get('interleaved_ops', 0)} operations, "
        f"{t.get('starts', 0) + t.get('interleaved_starts', 0)} invocations, "
        f"{t.get('order_checked', 0)} starts order-checked, "
        f"{t.get('interleaved_steps', 0)} thread switches; "
        f"{len(result.failures)} failing runs"
    )
    print(summary, file=text, flush=True)
    if args.json:
        doc: dict[str, Any] = {
            "schema": EXPLORE_SCHEMA,
            "ok": result.ok,
            "interrupted": interrupted,
            "seeds_asked": len(seeds),
            "seeds": result.seeds,
            "first_seed": seeds[0] if len(seeds) else None,
            "scenarios": result.scenarios,
            "runs": result.runs,
            "seconds": round(result.seconds, 2),
            "totals": result.totals,
            "failures": [
                {
                    "scenario": f.scenario,
                    "seed": f.seed,
                    "violations": f.violations,
                    "replay": f.replay_command(),
                }
                for f in result.failures
            ],
        }
        write_json(doc, args.json, None if args.json == "-" else text)
    if interrupted:
        print(
            f"kcont explore: interrupted after {result.seeds} of {len(seeds)} seeds "
            f"({result.runs} runs, {len(result.failures)} failing)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kcont.explore", description="explore interleavings on the simulated runtime"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


# dataclasses.replace is re-exported for callers building variants of a scenario.
replace = dataclasses.replace

if __name__ == "__main__":
    sys.exit(main())
