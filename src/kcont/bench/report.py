"""What the benchmarks print and write: the tables, the comparisons with
their verdicts, and the timer plot (matplotlib, imported lazily).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from .harness import Group

# -- targets -------------------------------------------------------------------------------


def _find(groups: list[Group], name: str, **params: Any) -> Group | None:
    for g in groups:
        if g.name == name and all(g.params.get(k) == v for k, v in params.items()):
            return g
    return None


def _ratio(g: Group | None, case: str, ref: str) -> float | None:
    if g is None:
        return None
    row = g.row(case)
    if row is None:
        return None
    value = row.get("ratios", {}).get(ref)
    return float(value) if value is not None else None


def evaluate_targets(groups: list[Group]) -> list[dict[str, Any]]:
    """Issue 7's targets, each met / not met / not measured."""
    out: list[dict[str, Any]] = []

    def add(target: str, value: float | None, limit: float, *, at_most: bool = True, unit: str = "x") -> None:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        out.append(
            {"target": target, "value": value, "limit": limit, "at_most": at_most, "unit": unit, "met": met}
        )

    imm = _find(groups, "immediate")
    if imm is not None:
        for case, floor, comp in (
            ("kcont sim depth 1", "deque depth 1 (floor)", "asyncio call_soon depth 1"),
            ("kcont sim batch", "deque batch (floor)", "asyncio call_soon batch"),
            ("kcont threaded depth 1", "deque depth 1 (floor)", "asyncio call_soon depth 1"),
            ("kcont threaded batch", "deque batch (floor)", "asyncio call_soon batch"),
        ):
            if imm.row(case) is None and "threaded" in case:
                add(f"immediate: {case} <= 0.6x asyncio call_soon", None, 0.6)
                add(f"immediate: {case} <= 3x deque floor", None, 3.0)
                continue
            add(f"immediate: {case} <= 0.6x asyncio call_soon", _ratio(imm, case, comp), 0.6)
            add(f"immediate: {case} <= 3x deque floor", _ratio(imm, case, floor), 3.0)
    cross = _find(groups, "cross")
    if cross is not None:
        for nprod in (1, 2):
            sfx = f", {nprod} producer{'s' if nprod > 1 else ''}"
            case = "kcont threaded" + sfx
            tpe = _ratio(cross, case, "ThreadPoolExecutor(2).submit" + sfx)
            add(
                f"cross-thread{sfx}: throughput >= 10x ThreadPoolExecutor.submit",
                None if tpe is None else 1 / tpe,
                10.0,
                at_most=False,
            )
            add(
                f"cross-thread{sfx}: time/op <= asyncio call_soon_threadsafe",
                _ratio(cross, case, "asyncio call_soon_threadsafe" + sfx),
                1.0,
            )
    for g in groups:
        if g.name != "timers":
            continue
        size = g.params["pending"]
        for case, floor in (
            ("kcont rearm later", "wheel rearm later (floor)"),
            ("kcont rearm random", "wheel rearm random (floor)"),
            ("kcont stop + schedule", "wheel cancel + re-arm (floor)"),
        ):
            add(f"timers P={size:,}: {case} <= 2x bare wheel", _ratio(g, case, floor), 2.0)
        if size >= 100_000:
            for case in ("kcont rearm later", "kcont rearm random"):
                add(
                    f"timers P={size:,}: {case} <= 0.5x asyncio call_later+cancel",
                    _ratio(g, case, "asyncio call_later + cancel"),
                    0.5,
                )
    mem = _find(groups, "memory")
    if mem is not None:
        row = mem.row("kcont pending continuation")
        add(
            "memory per pending continuation <= asyncio TimerHandle",
            None if row is None else row["x_versus"],
            1.0,
        )
    lat = _find(groups, "latency")
    if lat is not None:
        row = lat.row("kcont threaded")
        add("wake-up p99 <= 2x SimpleQueue hand-off", None if row is None else row["x_floor_p99"], 2.0)
    return out


# -- output --------------------------------------------------------------------------------


def _fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:,.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:,.1f} us"
    return f"{ns:,.0f}"


def _short(name: str | None) -> str:
    """A reference's name without what the row already says (for the table)."""
    if not name:
        return ""
    for long, short in (
        (" (floor)", ""),
        (", 1 producer", ""),
        (", 2 producers", ""),
        ("call_soon_threadsafe", "cst"),
        ("ThreadPoolExecutor(2).submit", "TPE.submit"),
    ):
        name = name.replace(long, short)
    return name


def _fmt_x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _table(headers: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(line(r), file=out)


def print_group(g: Group, out: TextIO) -> None:
    print(f"\n== {g.title} ==", file=out)
    params = ", ".join(f"{k}={v}" for k, v in g.params.items())
    if params:
        print(f"   ({params})", file=out)
    if g.kind == "ns":
        rows = []
        for r in g.rows:
            more = ", ".join(
                f"{v:.2f}x {_short(k)}"
                for k, v in r.get("ratios", {}).items()
                if k not in (r["floor"], r["versus"])
            )
            ops = f" [{r['ops']} ops]" if "budget" in (r.get("note") or "") else ""
            rows.append(
                [
                    r["case"] + ops,
                    _fmt_ns(r["ns_per_op"]),
                    _fmt_ns(r["ns_min"]),
                    _fmt_x(r["x_floor"]),
                    _fmt_x(r["x_versus"]),
                    _short(r["versus"]) if r["x_versus"] is not None else "",
                    more,
                ]
            )
        _table(["case", "ns/op", "min", "x floor", "x comp", "competitor", "other ratios"], rows, out)
    elif g.kind == "bytes":
        rows = [
            [
                r["case"],
                f"{r['bytes_per_object']:.0f}",
                _fmt_x(r["x_floor"]),
                _fmt_x(r["x_versus"]),
                r["note"],
            ]
            for r in g.rows
        ]
        _table(["object", "bytes", "x floor", "x asyncio", "note"], rows, out)
    else:
        rows = [
            [
                r["case"],
                str(r["samples"]),
                f"{r['p50_us']:.1f}",
                f"{r['p90_us']:.1f}",
                f"{r['p99_us']:.1f}",
                f"{r['max_us']:.1f}",
                _fmt_x(r["x_floor_p50"]),
                _fmt_x(r["x_floor_p99"]),
            ]
            for r in g.rows
        ]
        _table(["mechanism", "n", "p50 us", "p90 us", "p99 us", "max us", "p50 x fl", "p99 x fl"], rows, out)
    for note in g.notes:
        print(f"   note: {note}", file=out)
    for skip in g.skipped:
        print(f"   {skip}", file=out)
    out.flush()


def print_targets(targets: list[dict[str, Any]], out: TextIO) -> None:
    print("\n== Targets (issue 7; ratios from this run) ==", file=out)
    rows = []
    for t in targets:
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        op = "<=" if t["at_most"] else ">="
        rows.append([t["target"], _fmt_x(t["value"]), f"{op} {t['limit']:g}", verdict])
    _table(["target", "value", "limit", "verdict"], rows, out)
    met = sum(1 for t in targets if t["met"])
    measured = sum(1 for t in targets if t["met"] is not None)
    print(f"   {met} of {measured} measured targets met ({len(targets) - measured} not measured)", file=out)


def write_plot(groups: list[Group], path: str) -> str | None:
    """ns/op against pending timers, log-log, one line per implementation and
    operation.  Returns None, or why it could not."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "matplotlib not installed (pip install -e .[bench]): no plot"
    series: dict[str, list[tuple[int, float]]] = {}
    for g in groups:
        if g.name != "timers":
            continue
        for r in g.rows:
            if r["impl"] == "harness":
                continue
            series.setdefault(r["case"].replace(" (floor)", ""), []).append(
                (g.params["pending"], r["ns_per_op"])
            )
    if not series:
        return "no timer results to plot"
    fig, ax = plt.subplots(figsize=(11, 6))
    cmap = plt.get_cmap("tab20")
    for i, (label, points) in enumerate(sorted(series.items())):
        points.sort()
        style = "-o" if label.startswith("kcont") else ("--s" if label.startswith("wheel") else ":^")
        width = 2.2 if label.startswith("kcont") else 1.2
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, style, label=label, color=cmap(i % 20), linewidth=width)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pending timers")
    ax.set_ylabel("ns per operation (median)")
    ax.set_title("Timer re-arm cost against pending timers")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
