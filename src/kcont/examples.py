"""Small, runnable examples used by the CLI and the README."""

from __future__ import annotations

from typing import Any, TextIO

from ._core.continuation import Continuation
from ._core.mutex import Mutex
from .capi import wq_prilow, wq_softclock, wq_softnet
from .sim import SimRuntime


def simulated_tour(
    seed: int | None = None,
    ncpu: int = 2,
    out: TextIO | None = None,
    record: dict[str, Any] | None = None,
) -> int:
    """A packet path in miniature on the simulated runtime.

    * a softnet continuation per flow processes packets under the flow's lock;
    * each packet re-arms the flow's idle timer (the hot path), which fires
      only once the flow goes quiet;
    * teardown bookkeeping is deferred to a thread-level queue (``wq_prilow``);
    * while the test holds a flow's lock, that flow's sub-queue waits and the
      other flow runs.

    Prints the trace and the statistics (and puts them in ``record`` if
    given); returns 0.
    """
    rt = SimRuntime(ncpu=ncpu, hz=100, seed=seed, trace=True)
    log: list[str] = []

    def say(line: str) -> None:
        print(line, file=out)

    with rt:
        flows: dict[str, dict[str, Any]] = {}

        def teardown(flow: dict[str, Any], kc: Continuation[Any]) -> None:
            log.append(f"tick {rt.ticks}: teardown of {flow['name']} after {flow['packets']} packets")

        def idle_timeout(flow: dict[str, Any], kc: Continuation[Any]) -> None:
            log.append(f"tick {rt.ticks}: {flow['name']} idle, deferring teardown")
            flow["teardown"].schedule()

        def process(flow: dict[str, Any], kc: Continuation[Any]) -> None:
            while flow["queue"]:
                flow["packets"] += 1
                flow["queue"].pop(0)
            # Re-arm the idle timer: O(1), nothing allocated.
            flow["idle"].schedule(nticks=5)

        for index, name in enumerate(("flow-a", "flow-b")):
            lock = Mutex(name)
            cpu = rt.cpus[index % len(rt.cpus)]
            flow: dict[str, Any] = {"name": name, "queue": [], "packets": 0, "cpu": cpu}
            flow["rx"] = Continuation(wq_softnet, process, flow, lock=lock, name=f"rx:{name}")
            flow["idle"] = Continuation(wq_softclock, idle_timeout, flow, lock=lock, name=f"idle:{name}")
            flow["teardown"] = Continuation(wq_prilow, teardown, flow, name=f"teardown:{name}")
            flows[name] = flow

        def deliver(name: str, npackets: int) -> None:
            # The receive side hashes each flow to a CPU (RSS).
            flow = flows[name]
            flow["queue"].extend(range(npackets))
            if flow["rx"].invoking:
                return  # already scheduled: the packets ride along (coalescing)
            flow["rx"].schedule(cpu=flow["cpu"])

        for tick in range(8):
            deliver("flow-a", 3)
            if tick < 3:
                deliver("flow-b", 2)
            if tick == 4:
                # Hold flow-a's lock: its sub-queue waits, flow-b is not delayed.
                with flows["flow-a"]["rx"].mutex:
                    rt.run_until_idle()
                    log.append(f"tick {rt.ticks}: flow-a waited while its lock was held")
            rt.advance(1)
        rt.advance(10)

    say(f"kcont simulated tour: {ncpu} CPUs, seed={seed}")
    for line in log:
        say("  " + line)
    say("trace (tick event name cpu):")
    for event in rt.trace:
        if event.event in ("schedule",) and event.name.startswith("idle"):
            continue  # the re-arms: one per delivery, summarised below
        say(f"  {event.tick:3d} {event.event:8s} {event.name:18s} cpu{event.cpu}")
    totals: dict[str, object] = dict(rt.stats()["totals"])
    shown = ("scheduled", "armed", "invoked", "lock_waits", "stopped")
    say("totals: " + ", ".join(f"{key}={totals[key]}" for key in shown))
    if record is not None:
        record.update(
            ncpu=ncpu,
            seed=seed,
            log=list(log),
            trace=[{"tick": e.tick, "event": e.event, "name": e.name, "cpu": e.cpu} for e in rt.trace],
            totals={key: totals[key] for key in shown},
        )
    return 0


def add_arguments(parser: Any) -> None:
    """Options of ``kcont tour``."""
    from ._cli import MAX_NCPU, int_in, output_file

    parser.add_argument("--seed", type=int, default=None, help="CPU interleaving seed (default: round robin)")
    parser.add_argument(
        "--ncpu",
        type=int_in(1, MAX_NCPU),
        default=2,
        help=f"number of virtual CPUs, 1-{MAX_NCPU} (default: 2)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        type=output_file,
        default=None,
        help="also write the trace and totals as JSON to FILE ('-': standard output, the text then "
        "goes to standard error); FILE's folder must exist",
    )


def run_tour(args: Any) -> int:
    """``kcont tour``: the simulated tour on standard output."""
    from ._cli import text_stream, write_json

    text = text_stream(args)
    record: dict[str, Any] = {"schema": "kcont.tour/1"}
    status = simulated_tour(seed=args.seed, ncpu=args.ncpu, out=text, record=record)
    if args.json:
        write_json(record, args.json, None if args.json == "-" else text)
    return status
