"""What the benchmarks print and write: the tables, the comparisons with
their verdicts, and the timer plot (matplotlib, imported lazily).

Locking: none (pure functions of the results).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from .._cli import PLOT_INSTALL
from .harness import Group

# -- comparisons -------------------------------------------------------------------------

# Figures a quick run cannot judge, and why (their verdict flips from run to run).
QUICK_UNJUDGED = {
    "memory": "quick mode measures too few objects for a stable size per object",
    "latency": "quick mode takes too few samples for a p99 (it is one of the slowest few)",
}


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


def evaluate_comparisons(groups: list[Group], *, quick: bool = False) -> list[dict[str, Any]]:
    """How kcont compares with what a user would pick instead: each
    comparison with this run's ratio, what kcont aims for, and the verdict
    (``met``: True, False, or None when not measured or not judged)."""
    out: list[dict[str, Any]] = []

    def add(
        benchmark: str,
        subject: str,
        value: float | None,
        reference: str,
        limit: float,
        *,
        at_most: bool = True,
        measure: str = "the time of",
    ) -> None:
        unjudged = QUICK_UNJUDGED.get(benchmark) if quick else None
        met = None if value is None or unjudged else (value <= limit if at_most else value >= limit)
        aim = f"{'at most' if at_most else 'at least'} {limit:g}x"
        shown = "?" if value is None else f"{value:.2f}x"
        out.append(
            {
                "benchmark": benchmark,
                "comparison": f"{subject}: {shown} {measure} {reference} (aim: {aim})",
                "subject": subject,
                "reference": reference,
                "value": value,
                "limit": limit,
                "at_most": at_most,
                "met": met,
                "judged": value is not None and unjudged is None,
                "not_judged_because": unjudged if value is not None else None,
            }
        )

    imm = _find(groups, "immediate")
    if imm is not None:
        for case, floor, comp in (
            ("kcont sim depth 1", "deque depth 1 (floor)", "asyncio call_soon depth 1"),
            ("kcont sim batch", "deque batch (floor)", "asyncio call_soon batch"),
            ("kcont threaded depth 1", "deque depth 1 (floor)", "asyncio call_soon depth 1"),
            ("kcont threaded batch", "deque batch (floor)", "asyncio call_soon batch"),
        ):
            add("immediate", case, _ratio(imm, case, comp), comp, 0.6)
            add("immediate", case, _ratio(imm, case, floor), "a bare deque (the floor)", 3.0)
    cross = _find(groups, "cross")
    if cross is not None:
        for nprod in (1, 2):
            sfx = f", {nprod} producer{'s' if nprod > 1 else ''}"
            case = "kcont threaded" + sfx
            tpe = _ratio(cross, case, "ThreadPoolExecutor(2).submit" + sfx)
            add(
                "cross",
                f"cross-thread {case}",
                None if tpe is None else 1 / tpe,
                "ThreadPoolExecutor.submit",
                10.0,
                at_most=False,
                measure="the throughput of",
            )
            add(
                "cross",
                f"cross-thread {case}",
                _ratio(cross, case, "asyncio call_soon_threadsafe" + sfx),
                "asyncio call_soon_threadsafe",
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
            add("timers", f"{case} at {size:,} pending", _ratio(g, case, floor), "a bare hashed wheel", 2.0)
        if size >= 100_000:
            for case in ("kcont rearm later", "kcont rearm random"):
                add(
                    "timers",
                    f"{case} at {size:,} pending",
                    _ratio(g, case, "asyncio call_later + cancel"),
                    "asyncio call_later + cancel",
                    0.5,
                )
    mem = _find(groups, "memory")
    if mem is not None:
        row = mem.row("kcont pending continuation")
        add(
            "memory",
            "memory per pending continuation",
            None if row is None else row["x_versus"],
            "an asyncio TimerHandle",
            1.0,
            measure="the size of",
        )
    lat = _find(groups, "latency")
    if lat is not None:
        row = lat.row("kcont threaded")
        add(
            "latency",
            "kcont threaded wake-up p99",
            None if row is None else row["x_floor_p99"],
            "a bare SimpleQueue hand-off",
            2.0,
            measure="the p99 of",
        )
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


def print_comparisons(comparisons: list[dict[str, Any]], out: TextIO) -> None:
    """One line per comparison: its verdict, then the comparison in words."""
    print("\n== How kcont compares (ratios of this run; aim = what kcont is built for) ==", file=out)
    for c in comparisons:
        if c["value"] is None:
            verdict = "not measured"
        elif not c["judged"]:
            verdict = "not judged"
        else:
            verdict = "met" if c["met"] else "NOT MET"
        line = f"   {verdict:<13} {c['comparison']}"
        if c["not_judged_because"]:
            line += f"; not judged: {c['not_judged_because']}"
        print(line, file=out)
    met = sum(1 for c in comparisons if c["met"])
    judged = sum(1 for c in comparisons if c["judged"])
    unmeasured = sum(1 for c in comparisons if c["value"] is None)
    print(
        f"   {met} of {judged} judged comparisons met; {len(comparisons) - judged - unmeasured} not judged, "
        f"{unmeasured} not measured",
        file=out,
    )


def write_plot(groups: list[Group], path: str) -> str | None:
    """ns/op against pending timers, log-log, one line per implementation and
    operation.  Returns None, or why it could not."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return f"matplotlib is not installed ({PLOT_INSTALL}): no plot"
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
