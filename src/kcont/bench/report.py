"""What the benchmarks print and write: the tables, the comparisons with
their verdicts, and the timer plot (matplotlib, imported lazily).

Locking: none (pure functions of the results).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .._cli import PLOT_INSTALL
from .harness import Group

# -- comparisons -------------------------------------------------------------------------

# Figures a quick run cannot judge, and why (their verdict flips from run to run).
QUICK_UNJUDGED = {
    "memory": "quick mode measures too few objects for a stable size per object",
    "pipeline": "quick mode runs the pipeline too briefly for stable rates",
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
        unit: str = "x",
    ) -> None:
        unjudged = QUICK_UNJUDGED.get(benchmark) if quick else None
        met = None if value is None or unjudged else (value <= limit if at_most else value >= limit)
        aim = f"{'at most' if at_most else 'at least'} {limit:g}{unit}"
        shown = "?" if value is None else (f"{value:.2f}x" if unit == "x" else f"{value:.0f}{unit}")
        words = " ".join(w for w in (shown, measure, reference) if w)
        out.append(
            {
                "benchmark": benchmark,
                "comparison": f"{subject}: {words} (aim: {aim})",
                "subject": subject,
                "shown": shown,
                "measure": measure,
                "aim": aim,
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
        # Judged where kcont and asyncio both run the chain inside their
        # runtime (a function scheduling the next); the simulator's figures,
        # shown beside them, also pay for SimRuntime.step() per item.
        for case in ("kcont threaded depth 1", "kcont threaded depth 1 (kcont_schedule)"):
            comp = "asyncio call_soon depth 1"
            add("immediate", case, _ratio(imm, case, comp), comp + " (+ run)", 0.3)
    for g in groups:
        if g.name != "timers":
            continue
        size = g.params["pending"]
        for case, floor in (
            ("kcont rearm later", "wheel rearm later (floor)"),
            ("kcont rearm random", "wheel rearm random (floor)"),
        ):
            add("timers", f"{case} at {size:,} pending", _ratio(g, case, floor), "a bare hashed wheel", 1.0)
            add(
                "timers",
                f"{case} at {size:,} pending",
                _ratio(g, case, "asyncio call_later + cancel"),
                "asyncio call_later + cancel",
                0.15,
            )
    pipe = _find(groups, "pipeline")
    if pipe is not None:
        for r in pipe.rows:
            if r["impl"] != "kcont":
                continue
            if r["rate"] == "moderate":
                add(
                    "pipeline",
                    f"packet pipeline at {r['offered_pps']:,} pkt/s offered",
                    r["x_cpu"],
                    "asyncio's pipeline",
                    1.0,
                    measure="the process CPU per packet of",
                )
            else:
                add(
                    "pipeline",
                    f"packet pipeline at {r['offered_pps']:,} pkt/s offered",
                    r["x_pps"],
                    "asyncio's pipeline",
                    1.5,
                    at_most=False,
                    measure="the packets per second of",
                )
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
    mem = _find(groups, "memory")
    if mem is not None:
        row = mem.row("kcont pending continuation")
        timer_handle = next((r for r in mem.rows if r["case"].startswith("asyncio")), None)
        versus = (
            ""
            if timer_handle is None
            else f"; an asyncio TimerHandle: {timer_handle['bytes_per_object']:.0f} bytes"
        )
        add(
            "memory",
            "memory per pending continuation",
            None if row is None else row["bytes_per_object"],
            f"(tracemalloc{versus})",
            120,
            measure="",
            unit=" bytes",
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


CORE_LABELS = {"compiled": "compiled", "python": "pure"}


def core_label(implementation: str) -> str:
    """The short name of a core in the tables: "compiled" or "pure"."""
    return CORE_LABELS.get(implementation, implementation or "?")


Column = tuple[str, Callable[[dict[str, Any]], str]]


def _columns(kind: str) -> list[Column]:
    """The figures of a table of ``kind``: each shown once per core."""
    if kind == "ns":
        return [
            ("ns/op", lambda r: _fmt_ns(r["ns_per_op"])),
            ("x floor", lambda r: _fmt_x(r["x_floor"])),
            ("x comp", lambda r: _fmt_x(r["x_versus"])),
        ]
    if kind == "bytes":
        return [
            ("bytes", lambda r: f"{r['bytes_per_object']:.0f}"),
            ("x asyncio", lambda r: _fmt_x(r["x_versus"])),
        ]
    if kind == "pipeline":
        return [
            ("us CPU/pkt", lambda r: f"{r['cpu_us_per_packet']:.1f}"),
            ("pkt/s", lambda r: f"{r['pps']:,.0f}"),
            ("x CPU", lambda r: _fmt_x(r["x_cpu"])),
            ("x pkt/s", lambda r: _fmt_x(r["x_pps"])),
        ]
    return [
        ("p50 us", lambda r: f"{r['p50_us']:.1f}"),
        ("p99 us", lambda r: f"{r['p99_us']:.1f}"),
        ("p50 x fl", lambda r: _fmt_x(r["x_floor_p50"])),
        ("p99 x fl", lambda r: _fmt_x(r["x_floor_p99"])),
    ]


def _trailer(kind: str, r: dict[str, Any]) -> str:
    if kind == "ns":
        return _short(r["versus"]) if r["x_versus"] is not None else ""
    if kind == "bytes":
        return str(r["note"])
    return ""


def print_group(g: Group, out: TextIO) -> None:
    """One benchmark's table for one core."""
    print_groups([g], out)


def print_groups(groups: Sequence[Group], out: TextIO) -> None:
    """One benchmark's table, one column per core for each figure (the
    groups are the same benchmark measured on each core, in column order)."""
    g = groups[0]
    print(f"\n== {g.title} ==", file=out)
    params = ", ".join(f"{k}={v}" for k, v in g.params.items())
    if params:
        print(f"   ({params})", file=out)
    labels = [core_label(x.implementation) for x in groups]
    columns = _columns(g.kind)
    headers = ["case"]
    for name, _ in columns:
        headers += [f"{name} {label}" if len(groups) > 1 else name for label in labels]
    trailer = {"ns": "competitor", "bytes": "note"}.get(g.kind)
    if trailer:
        headers.append(trailer)
    cases: list[str] = []
    for x in groups:
        cases += [r["case"] for r in x.rows if r["case"] not in cases]
    rows = []
    for case in cases:
        found = [x.row(case) for x in groups]
        cells = [case]
        for _, fmt in columns:
            cells += ["-" if r is None else fmt(r) for r in found]
        if trailer:
            cells.append(next((_trailer(g.kind, r) for r in found if r is not None), ""))
        rows.append(cells)
    _table(headers, rows, out)
    if len(groups) > 1:
        print(
            f"   columns: {' / '.join(labels)} = measured in the process running that kcont core; the rows "
            "that are not kcont are the same code measured next to each core, round by round.",
            file=out,
        )
    for note in g.notes:
        print(f"   note: {note}", file=out)
    skipped: dict[str, list[str]] = {}
    for x in groups:
        for skip in x.skipped:
            skipped.setdefault(skip, []).append(core_label(x.implementation))
    for skip, where in skipped.items():
        only = f" ({' and '.join(where)} core only)" if len(where) < len(groups) else ""
        print(f"   {skip}{only}", file=out)
    out.flush()


def _verdict(c: dict[str, Any]) -> str:
    if c["value"] is None:
        return "not measured"
    if not c["judged"]:
        return "not judged"
    return "met" if c["met"] else "NOT MET"


def print_comparisons(comparisons: list[dict[str, Any]], out: TextIO) -> None:
    """One line per comparison, each core's verdict then the comparison in
    words (``comparisons`` carry their core in ``implementation``)."""
    print("\n== How kcont compares (ratios of this run; aim = what kcont is built for) ==", file=out)
    cores: list[str] = []
    for c in comparisons:
        if c.get("implementation", "") not in cores:
            cores.append(c.get("implementation", ""))
    keyed: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for c in comparisons:
        keyed.setdefault((c["benchmark"], c["subject"], c["reference"]), {})[c.get("implementation", "")] = c
    if len(cores) > 1:
        print(f"   verdicts: {' / '.join(core_label(k) for k in cores)} core", file=out)
    for by_core in keyed.values():
        first = next(iter(by_core.values()))
        if len(cores) == 1:
            line = f"   {_verdict(first):<13} {first['comparison']}"
        else:
            verdicts = " / ".join(_verdict(by_core[k]) if k in by_core else "-" for k in cores)
            shown = ", ".join(f"{core_label(k)} {by_core[k]['shown']}" for k in cores if k in by_core)
            words = " ".join(w for w in (shown, first["measure"], first["reference"]) if w)
            line = f"   {verdicts:<24} {first['subject']}: {words} (aim: {first['aim']})"
        if first["not_judged_because"]:
            line += f"; not judged: {first['not_judged_because']}"
        print(line, file=out)
    for core in cores:
        mine = [c for c in comparisons if c.get("implementation", "") == core]
        met = sum(1 for c in mine if c["met"])
        judged = sum(1 for c in mine if c["judged"])
        unmeasured = sum(1 for c in mine if c["value"] is None)
        who = f"{core_label(core)} core: " if len(cores) > 1 else ""
        print(
            f"   {who}{met} of {judged} judged comparisons met; "
            f"{len(mine) - judged - unmeasured} not judged, {unmeasured} not measured",
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
    cores = {g.implementation for g in groups if g.name == "timers"}
    alternatives_from = min(
        cores, key=lambda c: list(CORE_LABELS).index(c) if c in CORE_LABELS else 9, default=""
    )
    for g in groups:
        if g.name != "timers":
            continue
        for r in g.rows:
            if r["impl"] == "harness":
                continue
            label = r["case"].replace(" (floor)", "")
            if r["impl"] == "kcont":
                if len(cores) > 1:
                    label += f" ({core_label(g.implementation)} core)"
            elif g.implementation != alternatives_from:
                continue  # an alternative: drawn once, as measured next to the first core
            series.setdefault(label, []).append((g.params["pending"], r["ns_per_op"]))
    if not series:
        return "no timer results to plot"
    fig, ax = plt.subplots(figsize=(11, 6))
    cmap = plt.get_cmap("tab10")
    colors: dict[str, int] = {}  # an operation has one colour; the pure core's line is the dashed one
    for label, points in sorted(series.items()):
        points.sort()
        operation = label.split(" (")[0]
        color = cmap(colors.setdefault(operation, len(colors)) % 10)
        if label.startswith("kcont"):
            pure = label.endswith("(pure core)")
            style, width = ("--o" if pure else "-o"), (1.6 if pure else 2.4)
        else:
            style, width = ("-.s" if label.startswith("wheel") else ":^"), 1.2
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, style, label=label, color=color, linewidth=width)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pending timers")
    ax.set_ylabel("ns per operation (median)")
    both = " (kcont: solid, compiled core; dashed, pure core)" if len(cores) > 1 else ""
    ax.set_title("Timer re-arm cost against pending timers" + both)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
