"""The benchmark suite runs in quick mode and reports what it promises (no
timing assertions: CI only keeps the benchmarks from rotting)."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kcont
from kcont import bench
from kcont._core import layout
from kcont.bench import cli as bench_cli
from kcont.bench import cores

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    path = tmp_path_factory.mktemp("bench") / "out.json"
    out = io.StringIO()
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--json", str(path)])
    assert bench.run_from_args(args, out) == 0
    return json.loads(path.read_text()), out.getvalue()


def _cores(results: dict[str, Any]) -> list[str]:
    return list(results["meta"]["cores"])


def test_quick_run_reports_every_benchmark(quick_results: tuple[dict[str, Any], str]) -> None:
    """Every benchmark produces its group(s) for each core, with rows, and the
    tables are printed."""
    results, text = quick_results
    assert set(results) == {"schema", "interrupted", "meta", "groups", "comparisons"}
    assert results["schema"] == "kcont.bench/2" and results["interrupted"] is False
    assert results["meta"]["implementation"] == kcont.implementation
    assert text.startswith(f"kcont {kcont.__version__} benchmarks (")
    names = [g["name"] for g in results["groups"]]
    for name in bench.BENCHMARKS:
        assert name in names, name
    assert names.count("timers") == len(results["meta"]["sizes"]) * len(_cores(results))
    for g in results["groups"]:
        assert {"name", "title", "kind", "params", "rows", "notes", "skipped", "implementation"} <= set(g)
        assert g["implementation"] in _cores(results)
        assert g["rows"], g["name"]
        assert f"== {g['title']} ==" in text
    assert "== How kcont compares" in text


def test_quick_run_reports_both_cores_when_compiled(quick_results: tuple[dict[str, Any], str]) -> None:
    """With the compiled core built, one run measures both cores (the other in
    a partner process) and every table has a column per core."""
    results, text = quick_results
    if not layout.COMPILED and _cores(results) == ["python"]:  # the compiled core is not built
        assert "the pure core only" in text
        return
    assert _cores(results) == ["compiled", "python"]
    assert "compiled and pure cores side by side" in text.splitlines()[0]
    for name in bench.BENCHMARKS:
        assert [g["implementation"] for g in results["groups"] if g["name"] == name][:2] == [
            "compiled",
            "python",
        ]
    assert "ns/op compiled" in text and "ns/op pure" in text
    assert {c["implementation"] for c in results["comparisons"]} == {"compiled", "python"}
    assert results["meta"]["other_core"]["meta"]["implementation"] != kcont.implementation


def test_without_the_other_core_the_run_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the partner process comes up on the same core (no other core is
    built), the run says so and measures its own core alone."""
    env = dict(os.environ)
    if kcont.implementation == "python":
        env["KCONT_PURE_PYTHON"] = "1"
    else:
        env.pop("KCONT_PURE_PYTHON", None)
    monkeypatch.setattr(cores, "other_core_env", lambda: env)
    out = io.StringIO()
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--only", "memory"])
    assert bench.run_from_args(args, out) == 0
    text = out.getvalue()
    label = "compiled" if layout.COMPILED else "pure"
    assert "the other core is not available" in text and f"the {label} core only" in text
    assert "ns/op pure" not in text and "bytes compiled" not in text


def test_a_failing_partner_leaves_this_core_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the other core's process fails, the run says why and goes on with
    its own core."""
    monkeypatch.setattr(cores.Partner, "worker_module", "kcont.bench.no_such_module")
    out = io.StringIO()
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--quick", "--only", "memory"])
    assert bench.run_from_args(args, out) == 0
    text = out.getvalue()
    assert "the other core's process ended (" in text and "No module named" in text
    assert "== Memory per pending timer" in text and "bytes compiled" not in text


def test_rows_carry_medians_and_ratios(quick_results: tuple[dict[str, Any], str]) -> None:
    """ns/op rows have a median and per-round values; kcont rows have ratios to
    their floor and competitor."""
    results, _ = quick_results
    for g in results["groups"]:
        for row in g["rows"]:
            if g["kind"] == "ns":
                assert row["ns_per_op"] > 0
                assert len(row["ns_rounds"]) == results["meta"]["rounds"] or g["name"] == "timers"
                if row["role"] == "kcont":
                    assert row["x_floor"] is not None and row["x_floor"] > 0, row["case"]
            elif g["kind"] == "bytes":
                assert row["bytes_per_object"] > 0
            elif g["kind"] == "pipeline":
                assert row["cpu_us_per_packet"] > 0 and row["pps"] > 0
                assert (row["x_cpu"] is not None) == (row["impl"] == "kcont")
            else:
                assert row["samples"] > 0 and row["p99_us"] >= row["p50_us"] > 0
    timers = [g for g in results["groups"] if g["name"] == "timers"]
    cases = {r["case"] for r in timers[0]["rows"]}
    assert {"kcont rearm later", "kcont rearm random", "kcont stop + schedule"} <= cases
    assert {"wheel rearm later (floor)", "asyncio call_later + cancel"} <= cases


def test_comparisons_have_verdicts(quick_results: tuple[dict[str, Any], str]) -> None:
    """Each comparison of kcont with a competitor is listed in words, with met /
    not met, or not measured, or not judged (quick mode, for the figures it
    cannot judge: memory and the packet pipeline), for each core."""
    results, text = quick_results
    comparisons = results["comparisons"]
    words = " ".join(c["comparison"] for c in comparisons)
    for word in (
        "threaded depth 1 (kcont_schedule)",
        "cross-thread",
        "bare hashed wheel",
        "memory",
        "packet pipeline",
    ):
        assert word in words, word
    for c in comparisons:
        assert c["met"] in (True, False, None)
        assert (c["met"] is None) == (not c["judged"])
        assert c["judged"] == (c["value"] is not None and c["benchmark"] not in ("memory", "pipeline"))
        assert c["implementation"] in _cores(results)
    per_core = [
        [c["subject"] + c["reference"] for c in comparisons if c["implementation"] == k]
        for k in _cores(results)
    ]
    assert all(p == per_core[0] for p in per_core), "each core is judged on the same comparisons"
    assert "not judged: quick mode" in text


def test_no_tracker_vocabulary_in_what_bench_prints(quick_results: tuple[dict[str, Any], str]) -> None:
    """What users read speaks to them: no issue numbers, no target lists."""
    _, text = quick_results
    for word in ("issue", "Issue", "Targets", "research"):
        assert word not in text, word


def test_plot_or_reason(tmp_path: Path, quick_results: tuple[dict[str, Any], str]) -> None:
    """write_plot writes a PNG when matplotlib is installed, else says why not
    and how to install it."""
    results, _ = quick_results
    groups = [bench.Group(**g) for g in results["groups"]]
    path = tmp_path / "timers.png"
    problem = bench.write_plot(groups, str(path))
    if problem is None:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "pip install 'kcont[bench]'" in problem


def test_script_runs(tmp_path: Path) -> None:
    """``python benchmarks/run.py`` works (here on one small benchmark)."""
    path = tmp_path / "r.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--only",
            "memory",
            "--json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Memory per pending timer" in proc.stdout
    assert {g["name"] for g in json.loads(path.read_text())["groups"]} == {"memory"}


def test_bad_options_are_refused() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    for bad in (["--only", "nonsense"], ["--sizes", "1e12"], ["--sizes", "abc"], ["--n", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert bench_cli._parse_sizes("1e3, 2e4") == [1000, 20000]
    assert bench_cli._parse_only("timers,cross-thread") == ("cross", "timers")


def test_percentile_is_nearest_rank() -> None:
    """The one percentile of kcont: the value of rank ceil(p * n), never interpolated."""
    from kcont._stats import percentile, percentile_sorted

    values = list(range(1, 101))
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.07) == 7  # 0.07 * 100 is 7.000000000000001 in floating point
    assert percentile(values, 1.0) == 100
    assert percentile(values, 0.0) == 1
    assert percentile([4, 1, 3, 2], 0.5) == 2
    assert percentile_sorted([], 0.5) is None
    with pytest.raises(ValueError):
        percentile(values, 99)
