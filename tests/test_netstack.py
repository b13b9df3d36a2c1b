"""The packet pipeline (kcont.netstack) on real threads and real UDP sockets on
loopback: short bounded runs (about a second each) that assert exact
accounting, per-flow order, timers, ACKs and a clean shutdown, for the kcont
pipeline and its asyncio twin.  Timings are reported, never asserted."""

from __future__ import annotations

import argparse
import gc
import io
import json
import random
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import kcont
from kcont._cli import core_description
from kcont.netstack import Config, Report, open_sockets, run_pipeline, wire
from kcont.netstack import cli as netstack_cli
from kcont.netstack.stack import Stack

pytestmark = pytest.mark.threaded

# Small and short: every run sends rate * duration packets, then drains.
SHORT = Config(flows=32, rate=3000, duration=1.0, idle_ticks=100, delack_ticks=10, malformed_rate=0.01)


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("kcont/", "netstack/"))}


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves a kcont or netstack thread, a netstack
    socket, or an unclosed-socket ResourceWarning behind."""
    before = _threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    assert _threads() - before == set(), "threads left behind"
    assert open_sockets() == [], "sockets left open"
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]


def _assert_accounted(r: Report) -> None:
    """The accounting identities every run must satisfy."""
    assert r.order_violations == 0
    assert r.lost == 0
    assert r.sent + r.malformed_sent == r.received + r.not_received
    assert r.received == r.processed + r.malformed_total
    assert r.not_received == r.socket_drops  # anything not received was dropped by the kernel, counted
    assert r.seq_gaps <= r.socket_drops
    assert r.exceptions == 0
    assert r.threads_left == [] and r.sockets_left == 0
    failed = [name for name, ok in r.checks.items() if not ok]
    assert not failed, (failed, r.notes, r.as_dict())


# -- the wire format ----------------------------------------------------------


def test_parse_accepts_what_build_makes() -> None:
    data = wire.build(wire.DATA, 7, 42, 123456789, b"x" * 10)
    assert wire.parse(data) == wire.Header(wire.DATA, 7, 42, 123456789, 10)


@pytest.mark.parametrize("kind", [*wire.MALFORMED_KINDS, "bad_version"])
def test_parse_rejects_each_malformed_kind_with_its_reason(kind: str) -> None:
    with pytest.raises(wire.Malformed) as info:
        wire.parse(wire.malformed(kind, 1, 2, 3, b"payload"))
    assert info.value.reason == kind


def test_parse_never_raises_anything_but_malformed_on_garbage() -> None:
    rng = random.Random(5)
    good = wire.build(wire.DATA, 1, 2, 3, b"abc")
    for _ in range(5000):
        if rng.random() < 0.5:
            data = rng.randbytes(rng.randrange(0, 64))
        else:  # a valid frame with a few bytes flipped, cut or extended
            buf = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            data = bytes(buf[: rng.randrange(len(buf) + 1)]) + rng.randbytes(rng.randrange(3))
        try:
            header = wire.parse(data)
        except wire.Malformed as bad:
            assert bad.reason in wire.REASONS
        else:
            assert header.length == len(data) - wire.HEADER.size


# -- the kcont pipeline --------------------------------------------------------


def test_kcont_pipeline_accounts_for_every_packet(no_leaks: None) -> None:
    r = run_pipeline(SHORT)
    _assert_accounted(r)
    assert r.sent == SHORT.packets
    assert r.processed == r.sent - r.seq_gaps
    assert r.malformed_sent > 0
    if r.not_received == 0:
        assert r.malformed_total == r.malformed_sent
    assert set(r.malformed) == set(wire.REASONS)
    # Every packet re-armed the idle timer (or found its expiry committed:
    # EBUSY, and the idle handler re-armed itself after re-checking).
    stats = r.runtime_stats
    assert stats is not None
    assert r.timer_rearms + r.rearm_busy == r.processed
    assert stats["queues"]["wq_softclock"]["armed"] == r.timer_rearms + r.idle_rechecks
    # Idle timers fired and tore down every flow; teardown ran on wq_prilow.
    assert r.flows_created >= SHORT.flows
    assert r.flows_torn_down == r.flows_created
    assert r.idle_fired >= r.flows_torn_down
    assert stats["queues"]["wq_prilow"]["invoked"] == r.flows_torn_down
    # ACKs went back and were measured.
    assert r.acks_sent > 0 and r.acks_received == r.acks_sent
    assert r.unacked_flows == 0 or r.not_received > 0
    assert r.rtt_p50_us is not None and r.rtt_p50_us >= 1e6 * (SHORT.delack_ticks - 1) / SHORT.hz
    # Both CPUs worked, and the runtime shut down with nothing pending or running.
    assert len(r.per_cpu) == SHORT.cpus and all(n > 0 for n in r.per_cpu)
    assert r.shutdown == {
        "ran": stats["totals"]["invoked"],
        "failed": 0,
        "cancelled": 0,
        "pending": 0,
        "unfinished": 0,
    }


def test_flows_torn_down_and_recreated_mid_stream_keep_order(no_leaks: None) -> None:
    """An idle timeout shorter than the gap between a flow's packets: flows are
    torn down between packets and re-created by the next one, constantly,
    racing the RX threads.  Order and accounting must hold anyway."""
    config = Config(flows=8, rate=800, duration=1.0, idle_ticks=3, delack_ticks=1, malformed_rate=0)
    r = run_pipeline(config)
    _assert_accounted(r)
    assert r.flows_created > 4 * config.flows  # flows came and went
    assert r.flows_torn_down == r.flows_created


def test_malformed_datagrams_are_counted_and_never_reach_a_continuation(no_leaks: None) -> None:
    """Garbage straight to the RX sockets (empty, truncated, wrong magic,
    absurd and oversized lengths, random bytes): counted per reason, no
    exception in any continuation, valid traffic unaffected."""
    with kcont.Runtime(ncpu=2, hz=1000) as rt:
        config = Config(flows=4, idle_ticks=50, delack_ticks=5)
        stack = Stack(config, rt, "netstack-fuzz")
        rt.exception_handler = stack.on_exception
        out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            stack.start()
            rng = random.Random(9)
            garbage = [
                b"",
                b"K",
                wire.build(wire.DATA, 1, 0, 0)[:-1],
                wire.malformed("bad_magic", 1, 0, 0),
                wire.malformed("bad_length", 1, 0, 0),
                wire.malformed("bad_type", 1, 0, 0),
                wire.malformed("bad_version", 1, 0, 0),
                wire.build(wire.DATA, 1, 0, 0, bytes(3000)),  # too long, and cut by the 2048-byte read
                wire.build(wire.ACK, 1, 0, 0),  # an ACK sent to the stack
                *(rng.randbytes(rng.randrange(1, 100)) for _ in range(200)),
            ]
            valid = [
                wire.build(wire.DATA, 100 + f, seq, time.monotonic_ns())
                for seq in range(20)
                for f in range(4)
            ]
            for i, data in enumerate(garbage + valid):
                out.sendto(data, stack.targets[i % len(stack.targets)])
            # Wait until everything was read and processed and the four flows
            # were torn down by their idle timers (so the shutdown stops none).
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                snap = stack.snapshot()
                if snap.received == len(garbage) + len(valid) and stack.quiescent():
                    break
                time.sleep(0.01)
            rt.wait_idle(timeout=5)
        finally:
            out.close()
            stack.close()
    snap = stack.snapshot()
    assert snap.received == len(garbage) + len(valid)
    assert snap.malformed_total == len(garbage)
    assert snap.processed == len(valid)
    assert snap.order_violations == 0 and snap.seq_gaps == 0
    assert snap.exceptions == 0 and stack.exceptions == []
    assert snap.flows_created == snap.flows_torn_down == 4
    assert snap.malformed["truncated"] >= 3 and snap.malformed["bad_length"] >= 2


# -- the asyncio twin -------------------------------------------------------------


def test_asyncio_pipeline_gives_the_same_counts_on_the_same_traffic(no_leaks: None) -> None:
    k = run_pipeline(SHORT, impl="kcont")
    a = run_pipeline(SHORT, impl="asyncio")
    for r in (k, a):
        _assert_accounted(r)
        assert r.flows_torn_down == r.flows_created
        assert r.acks_received == r.acks_sent > 0
    assert (k.sent, k.malformed_sent) == (a.sent, a.malformed_sent)
    if k.not_received == 0 and a.not_received == 0:
        assert k.processed == a.processed == SHORT.packets
        assert k.malformed == a.malformed
    assert a.per_cpu == [a.processed]


# -- the command line ------------------------------------------------------------------


def _demo_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    netstack_cli.add_arguments(parser)
    return parser.parse_args(
        ["--flows", "16", "--rate", "2000", "--duration", "0.5", "--idle-ticks", "50", *extra]
    )


def test_demo_writes_json_for_scripts(tmp_path: Path, no_leaks: None) -> None:
    path = tmp_path / "report.json"
    out = io.StringIO()
    status = netstack_cli.run(_demo_args("--compare", "none", "--json", str(path), "--progress"), out)
    doc = json.loads(path.read_text())
    assert status == 0 and doc["ok"] is True
    assert doc["schema"] == "kcont.demo/1" and doc["interrupted"] is False
    assert doc["implementation"] == kcont.implementation
    assert out.getvalue().startswith(f"kcont demo ({core_description()}): ")
    (run,) = doc["runs"]
    assert run["impl"] == "kcont"
    for key in (
        "pps",
        "order_violations",
        "lost",
        "socket_drops",
        "rtt_p50_us",
        "rtt_p99_us",
        "rearms_per_s",
        "per_cpu",
        "runtime_stats",
        "shutdown",
        "checks",
        "malformed",
    ):
        assert key in run, key
    assert run["order_violations"] == 0 and run["lost"] == 0
    assert run["runtime_stats"]["queues"]["wq_softnet"]["invoked"] > 0
    text = out.getvalue()
    assert "== kcont pipeline ==" in text and "checks: all passed" in text
    assert "pkt/s" in text  # live progress lines (--progress)


def test_demo_help_explains_every_option() -> None:
    parser = argparse.ArgumentParser()
    netstack_cli.add_arguments(parser)
    text = parser.format_help()
    for option in (
        "--flows",
        "--rate",
        "--duration",
        "--ncpu",
        "--rx-queues",
        "--hz",
        "--idle-ticks",
        "--delack-ticks",
        "--compare",
        "--json",
        "--quiet",
        "--malformed-rate",
    ):
        assert option in text, option
    assert all(action.help for action in parser._actions)


def test_demo_refuses_a_bad_option_value(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad value is refused when the options are parsed, naming the option."""
    with pytest.raises(SystemExit) as exit_info:
        _demo_args("--rx-queues", "0")
    assert exit_info.value.code == 2
    assert "--rx-queues" in capsys.readouterr().err


def test_demo_stops_at_its_duration_when_the_rate_is_out_of_reach(no_leaks: None) -> None:
    """The source stops at --duration (plus a short grace) whatever the rate,
    and the report says it could not reach the rate."""
    config = Config(flows=8, rate=50_000_000, duration=0.3, idle_ticks=50, delack_ticks=10)
    started = time.monotonic()
    report = run_pipeline(config, impl="kcont")
    assert report.sent < config.packets
    assert time.monotonic() - started < 10
    assert any("could not reach the asked rate" in note for note in report.notes), report.notes


@pytest.mark.parametrize("impl", ["kcont", "asyncio"])
def test_a_stop_request_ends_the_run_early_and_cleanly(
    impl: str, no_leaks: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Setting ``stop`` (what Ctrl-C does) mid-traffic ends the run soon, with
    every thread joined and socket closed, no callback error logged, and a
    report that says it was interrupted."""
    # Short timers: some are due while the asyncio pipeline closes its transports.
    config = Config(flows=1000, rate=8000, duration=20.0, idle_ticks=3, delack_ticks=1)
    stop = threading.Event()
    timer = threading.Timer(0.7, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        report = run_pipeline(config, impl=impl, stop=stop)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 8
    assert report.interrupted and report.sent < config.packets
    assert report.threads_left == [] and report.sockets_left == 0
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], caplog.text
