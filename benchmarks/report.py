"""Write the figures as ``docs/benchmarks.md`` and PNG charts in ``docs/img/``.

The page is generated whole: the header (machine, Python, versions), the
targets with a verdict each, one table per case, the charts, and the
breakdown of our own cost. The prose that explains the breakdown lives in
``benchmarks/notes.md`` and is copied in as it is, so that regenerating the
page never loses it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ._harness import Result
from .suite import CALLS_PER_TASK, MEMORY_INSTANCES, TASKS, Figures, Row

NOTES = Path(__file__).with_name("notes.md")
ISSUE_BARE_NS = 135.0  # the bare await on the machine the targets were set on

FEATURES = {
    "retry": "Retry",
    "breaker": "Circuit breaker, CLOSED",
    "bulkhead": "Bulkhead (permits to spare)",
    "timeout": "Timeout (not reached)",
    "fallback": "Fallback (not needed)",
    "stack": "Retry + breaker + bulkhead + timeout",
}


def us(seconds: float) -> str:
    """Seconds as microseconds, 2 significant decimals for small figures."""
    v = seconds * 1e6
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _kind_mark(kind: str) -> str:
    return {"ours": "**", "floor": "_", "reference": "_"}.get(kind, "")


def _name(row: Row) -> str:
    mark = _kind_mark(row.contender.kind)
    label = row.contender.label
    if row.contender.kind == "floor":
        label = f"{label} (floor)"
    elif row.contender.kind == "reference":
        label = f"{label} (reference)"
    return f"{mark}{label}{mark}"


def _cheapest_peer(rows: list[Row]) -> Row | None:
    peers = [r for r in rows if r.contender.kind == "peer"]
    return min(peers, key=lambda r: r.ratio) if peers else None


def _per_call_table(rows: list[Row], against: Row | None, note_col: bool = True) -> list[str]:
    """A table: per call, overhead above bare await, x bare await, x ``against``, spread."""
    head = "| contender | per call (µs) | over a bare await (µs) | × bare await |"
    rule = "| --- | ---: | ---: | ---: |"
    if against is not None:
        head += f" × {against.contender.label} |"
        rule += " ---: |"
    head += " spread, IQR (µs) |"
    rule += " --- |"
    if note_col:
        head += " notes |"
        rule += " --- |"
    lines = [head, rule]
    for r in sorted(rows, key=lambda r: r.ratio):
        res = r.result
        cells = [_name(r), us(res.median), us(res.overhead), f"{res.ratio:.1f}"]
        if against is not None:
            cells.append(f"{res.ratio / against.ratio:.2f}")
        cells.append(f"{us(res.q1)}–{us(res.q3)}")
        if note_col:
            cells.append(r.contender.note)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


@dataclass
class Verdict:
    target: str
    figure: str
    met: bool | None  # None: not measured in this run
    why: str = ""


def _find(rows: Iterable[Row], label: str) -> Row | None:
    for r in rows:
        if r.contender.label == label:
            return r
    return None


def verdicts(f: Figures) -> list[Verdict]:
    out: list[Verdict] = []
    bare = f.bare
    scale = ISSUE_BARE_NS / (bare.median * 1e9) if bare else 1.0

    def absolute(label: str, case: str, limit_us: float, what: str, floor: str) -> None:
        rows = f.case(case)
        row = _find(rows, label)
        if row is None:
            out.append(Verdict(what, "not measured", None))
            return
        over = row.result.overhead * 1e6
        scaled = over * scale
        # The targets were set where a bare await cost ISSUE_BARE_NS: the
        # figure scaled to that machine is the one held against them.
        why = ""
        if over <= limit_us < scaled:
            why = "under the figure here, over it once scaled"
        # Scaling by the bare await is a rough guide across machines: where
        # the hand-rolled floor itself lands over the target, say so.
        low = _find(rows, floor)
        if low is not None and low.result.overhead * 1e6 * scale > limit_us:
            floor_scaled = low.result.overhead * 1e6 * scale
            why = "; ".join(
                w for w in (why, f"the floor ({floor}) itself is {floor_scaled:.2f} µs scaled") if w
            )
        out.append(
            Verdict(
                f"{what} <= {limit_us} µs over a bare await",
                f"{over:.2f} µs here; {scaled:.2f} µs scaled to a "
                f"{ISSUE_BARE_NS:.0f} ns bare await",
                scaled <= limit_us,
                why,
            )
        )

    counter = "consecutive-failure counter"
    absolute("resilient @Retry", "success", 0.6, "retry", "try/except loop")
    timed = "breaker, TimeWindow + slow-call timing"
    absolute("resilient TimeWindow+slow", "success", 0.55, timed, counter)
    absolute("resilient TimeWindow+slow", "open", 0.95, "open rejection", counter)
    absolute("resilient Pipeline", "success", 11.0, "the 4-policy stack", "the four floors stacked")

    success = f.case("success")
    bulk, sem = _find(success, "resilient @Bulkhead"), _find(success, "asyncio.Semaphore")
    if bulk and sem:
        x = bulk.ratio / sem.ratio
        out.append(Verdict("bulkhead <= 1.5x a bare semaphore", f"{x:.2f}x", x <= 1.5))
    tmo, ast = _find(success, "resilient @Timeout"), _find(success, "asyncio.timeout")
    if tmo and ast:
        x = tmo.ratio / ast.ratio
        out.append(Verdict("timeout no dearer than asyncio.timeout", f"{x:.2f}x", x <= 1.0))
    if f.crowd:
        ours = next(r for r in f.crowd if r.contender.kind == "ours")
        hand = next((r for r in f.crowd if r.contender.library == "floor"), None)
        out.append(
            Verdict(
                f"{TASKS:,} tasks × {CALLS_PER_TASK} calls, breaker + bulkhead(100) <= 2.8x bare",
                f"{ours.ratio:.2f}x",
                ours.ratio <= 2.8,
                # The bare run is nearly all loop turns: how many a waited call takes
                # varies with the host more than anything a library does.
                f"the floor ({hand.contender.label}) itself is {hand.ratio:.2f}x"
                if hand is not None and hand.ratio > 2.8
                else "",
            )
        )
        peers = [r for r in f.crowd if r.contender.kind == "peer"]
        floor = next(r for r in f.crowd if r.contender.library == "floor")
        if peers:
            best = min(peers, key=lambda r: r.ratio)
            out.append(
                Verdict(
                    "case 4: below the cheapest peer",
                    f"{ours.ratio / best.ratio:.2f}x {best.contender.label}",
                    ours.ratio < best.ratio,
                )
            )
        out.append(
            Verdict(
                "case 4: within ~1.3x of the floor",
                f"{ours.ratio / floor.ratio:.2f}x {floor.contender.label}",
                ours.ratio <= 1.3 * floor.ratio,
            )
        )
    if f.memory:
        mem = {m.label: m.bytes_per_instance for m in f.memory}
        small = mem.get("resilient CountWindow(10)")
        default = mem.get("resilient CountWindow(100) (default)")
        if small is not None:
            out.append(
                Verdict(
                    "memory per breaker <= 600 B (a small window: CountWindow(10))",
                    f"{small:.0f} B",
                    small <= 600,
                    "see the memory section for where the bytes go",
                )
            )
        if default is not None:
            out.append(
                Verdict(
                    "memory per breaker <= 1 KB with CountWindow(100)",
                    f"{default:.0f} B",
                    default <= 1024,
                )
            )

    # below the cheapest peer, and within ~1.3x of the floor, case by case
    groups: list[tuple[str, list[Row], str]] = []
    for feature in FEATURES:
        rows = [r for r in success if r.contender.feature == feature]
        groups.append((f"case 1, {feature}", rows, ""))
    groups.append(("case 2, open rejection", f.case("open"), ""))
    groups.append(("case 3, fails twice", f.case("fails twice"), ""))
    for title, rows, _ in groups:
        ours = [r for r in rows if r.contender.kind == "ours"]
        floor = next((r for r in rows if r.contender.kind == "floor"), None)
        best = _cheapest_peer(rows)
        # One verdict per row of ours (e.g. the breaker's count and time windows),
        # named when the group has several, so no variant hides behind another.
        for row in ours:
            name = f"{title} ({row.contender.label})" if len(ours) > 1 else title
            if best is not None:
                out.append(
                    Verdict(
                        f"{name}: below the cheapest peer",
                        f"{row.contender.label} {row.ratio / best.ratio:.2f}x "
                        f"{best.contender.label}",
                        row.ratio < best.ratio,
                    )
                )
            if floor is not None:
                x = row.ratio / floor.ratio
                out.append(
                    Verdict(
                        f"{name}: within ~1.3x of the floor",
                        f"{row.contender.label} {x:.2f}x {floor.contender.label}",
                        x <= 1.3,
                    )
                )
    return out


# -- charts ------------------------------------------------------------------------------------


COLOURS = {"ours": "#1f77b4", "floor": "#7f7f7f", "reference": "#bcbcbc", "peer": "#ff7f0e"}


def chart_overhead(f: Figures, path: Path) -> None:
    """One panel per group of cases 1-3: x bare await per call, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    panels: list[tuple[str, list[Row]]] = []
    success = f.case("success")
    for feature, title in FEATURES.items():
        rows = [r for r in success if r.contender.feature == feature]
        if rows:
            panels.append((f"1. {title}", rows))
    if f.case("open"):
        panels.append(("2. Open breaker: rejection", f.case("open")))
    if f.case("fails twice"):
        panels.append(("3. Retry: fails twice, then succeeds", f.case("fails twice")))
    if not panels:
        return
    cols = 2
    nrows = (len(panels) + 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(13, 3.1 * nrows), squeeze=False)
    for ax, (title, rows) in zip(axes.flat, panels, strict=False):
        rows = sorted(rows, key=lambda r: r.ratio, reverse=True)
        labels = [r.contender.label for r in rows]
        values = [r.ratio for r in rows]
        colours = [COLOURS[r.contender.kind] for r in rows]
        bars = ax.barh(labels, values, color=colours)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(title, fontsize=10, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(axis="x", labelsize=8)
        for bar, r in zip(bars, rows, strict=True):
            ax.text(
                bar.get_width() * 1.05,
                bar.get_y() + bar.get_height() / 2,
                f"{r.ratio:.1f}×",
                va="center",
                fontsize=7,
            )
        ax.set_xlim(left=1, right=max(values) * 3)  # 1×: a bare await
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        "Time per call, in bare awaits (log scale from 1×, a bare await; lower is better). "
        "Blue: resilient, grey: hand-rolled floor, light grey: reference, orange: peers",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_crowd(f: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(f.crowd, key=lambda r: r.ratio, reverse=True)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    bars = ax.barh(
        [r.contender.label for r in rows],
        [r.ratio for r in rows],
        color=[COLOURS[r.contender.kind] for r in rows],
    )
    for bar, r in zip(bars, rows, strict=True):
        ax.text(
            bar.get_width() * 1.01,
            bar.get_y() + bar.get_height() / 2,
            f"{r.ratio:.2f}× ({r.median:.2f} s)",
            va="center",
            fontsize=8,
        )
    ax.axvline(2.8, color="#2ca02c", linestyle="--", linewidth=1)
    ax.set_xlim(right=max(r.ratio for r in rows) * 1.3)
    ax.set_title(
        f"{TASKS:,} tasks × {CALLS_PER_TASK} calls through breaker + bulkhead(100)\n"
        "time over the bare run (dashed: the 2.8× target)",
        fontsize=9,
    )
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_backends(f: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    names = list(f.backends)
    ours = [r.contender.label for r in f.backends[names[0]] if r.contender.kind == "ours"]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    width = 0.8 / len(names)
    for i, backend in enumerate(names):
        by = {r.contender.label: r for r in f.backends[backend]}
        values = [by[label].ratio if label in by else 0 for label in ours]
        xs = [j + i * width for j in range(len(ours))]
        ax.bar(xs, values, width=width, label=backend)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(ours))])
    ax.set_xticklabels(
        [label.replace("resilient ", "") for label in ours], fontsize=8, rotation=20, ha="right"
    )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(bottom=1)
    ax.set_ylabel("time per call, in bare awaits", fontsize=8)
    ax.set_title("resilient on each backend (each against its own bare await)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the page -------------------------------------------------------------------------------


def _header(f: Figures, quick: bool, command: str) -> list[str]:
    m = f.meta
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    load = ", ".join(f"{x:.2f}" for x in m["load"])
    total = sum(f.seconds.values())
    lines = [
        "# Benchmarks",
        "",
        f"What a call costs with `resilient`, next to its peers and to what you would write by "
        f"hand. Generated by `{command}` on {m['date']} "
        f"({'a quick run: few, short rounds, rough figures' if quick else 'a full run'}, "
        f"{total:.0f} s); do not edit by hand (the explanations come from "
        f"`benchmarks/notes.md`).",
        "",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['system']}; load average at the "
        f"start {load} (a shared machine: other work ran beside the benchmark, which is why "
        f"CPU time is measured).",
        f"- **Python**: {m['python']}; asyncio's default loop unless the case says otherwise.",
        f"- **Libraries**: {versions}.",
    ]
    if m["missing"]:
        lines.append(f"- **Not installed, not measured**: {', '.join(m['missing'])}.")
    if f.bare is not None:
        lines.append(
            f"- **A bare `await f()`** costs {f.bare.median * 1e9:.0f} ns here "
            f"(the targets were set on a machine where it cost ~{ISSUE_BARE_NS:.0f} ns)."
        )
    lines += [
        "",
        "## How the figures are made",
        "",
        "Each contender protects the same trivial `async def` (it returns 1) and is used "
        "through its documented API, its decorator where it has one. The harness "
        "(`benchmarks/_harness.py`) times each contender in a plain loop of calls, sized to "
        "last a fixed time, and pairs every such timing with a timing of a bare `await f()` "
        "taken just before it; the contenders run in a different order every round, after "
        "warm-up rounds that are thrown away. **× bare await** is the median over the rounds "
        "of (contender ÷ its paired bare await): the figure to compare, steady on a busy "
        "machine and comparable across machines. **Over a bare await** is the median of the "
        "differences, in µs; **per call** is the median time; the spread is the interquartile "
        "range of the per-call times. Cases 1–3 are one run, so every ratio between two "
        "contenders in them comes from the same run. Time is the thread's CPU time "
        "(`time.thread_time`): the timed loops never wait, and on a shared machine the time "
        "other processes take the CPU away is not the code's cost. The garbage collector is "
        "off inside timed loops; between them the harness yields to the loop once, and each "
        "timed loop runs in a fresh context (no contender's context variables weigh on the "
        "next).",
        "",
        "Settings shared by all: 3 attempts and no wait for retries; breakers that open after "
        "5 failures and stay open an hour; 100 permits with room for 10,000 waiters; a 30 s "
        "timeout; a constant fallback. **Bold**: resilient; _italics_: the hand-rolled floors "
        "(what you would write yourself) and references.",
        "",
    ]
    return lines


def _verdict_lines(f: Figures) -> list[str]:
    lines = ["## Targets", "", "| target | measured | met |", "| --- | --- | :---: |"]
    for v in verdicts(f):
        mark = "–" if v.met is None else ("yes" if v.met else "**no**")
        figure = v.figure + (f" ({v.why})" if v.why else "")
        lines.append(f"| {v.target} | {figure} | {mark} |")
    return [*lines, ""]


def _case_1(f: Figures) -> list[str]:
    success = f.case("success")
    if not success:
        return []
    lines = [
        "## 1. The success path: overhead per call",
        "",
        "Every call succeeds, so this is what a policy costs on a healthy dependency. "
        "The last numeric column compares each contender with ours (the first resilient row "
        "of the group): above 1, slower than ours.",
        "",
        "![Time per call, in bare awaits](img/benchmarks-overhead.png)",
        "",
    ]
    for feature, title in FEATURES.items():
        rows = [r for r in success if r.contender.feature == feature]
        if not rows:
            continue
        ours = next((r for r in rows if r.contender.kind == "ours"), None)
        lines += [f"### {title}", "", *_per_call_table(rows, ours), ""]
    return lines


def _case_2_3(f: Figures) -> list[str]:
    lines: list[str] = []
    opened = f.case("open")
    if opened:
        ours = next((r for r in opened if r.contender.kind == "ours"), None)
        lines += [
            "## 2. An open breaker: the cost of a rejection",
            "",
            "The breaker was opened by 5 failures; each timed call is rejected without "
            "calling the function. The figure includes raising and catching the library's "
            "error.",
            "",
            *_per_call_table(opened, ours),
            "",
        ]
    twice = f.case("fails twice")
    if twice:
        ours = next((r for r in twice if r.contender.kind == "ours"), None)
        lines += [
            "## 3. Retry machinery: a call that fails twice, then succeeds",
            "",
            "Each timed call makes three attempts (two raise, the third returns), with zero "
            "wait between them: what is measured is the machinery (catching, deciding, "
            "scheduling, yielding once per retry). The floor is a try/except loop with an "
            "`asyncio.sleep(0)` between attempts.",
            "",
            *_per_call_table(twice, ours),
            "",
        ]
    return lines


def _case_4(f: Figures) -> list[str]:
    if not f.crowd:
        return []
    lines = [
        f"## 4. {TASKS:,} concurrent tasks × {CALLS_PER_TASK} calls through breaker + "
        "bulkhead(100)",
        "",
        f"{TASKS:,} tasks start at once; each makes {CALLS_PER_TASK} calls in a row. The work "
        "inside a call is one loop turn (`asyncio.sleep(0)`), so the bulkhead is full and "
        "9,900 tasks wait in line at any time. Each round checks that every call ran and "
        "that no more than 100 ran at once. **× bare run**: the median over the rounds of "
        "(batch time ÷ the same round's bare run, where no policy wraps the work).",
        "",
        "![Crowd](img/benchmarks-crowd.png)",
        "",
        "| contender | batch time (s) | IQR (s) | × bare run | notes |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for r in sorted(f.crowd, key=lambda r: r.ratio):
        c = r.contender
        mark = _kind_mark(c.kind) if c.library != "none" else "_"
        lines.append(
            f"| {mark}{c.label}{mark} | {r.median:.3f} | {r.q1:.3f}–{r.q3:.3f} | "
            f"{r.ratio:.2f} | {c.note} |"
        )
    return [*lines, ""]


def _case_5(f: Figures) -> list[str]:
    if not f.memory:
        return []
    lines = [
        "## 5. Memory per breaker",
        "",
        f"{MEMORY_INSTANCES:,} breakers of each kind kept alive, measured with `tracemalloc` "
        "(everything a library allocates per breaker, registries included; the names were "
        "made beforehand).",
        "",
        "| breaker | bytes per instance |",
        "| --- | ---: |",
    ]
    for m in sorted(f.memory, key=lambda m: m.bytes_per_instance):
        mark = _kind_mark(m.kind)
        label = f"{m.label} (floor)" if m.kind == "floor" else m.label
        lines.append(f"| {mark}{label}{mark} | {m.bytes_per_instance:.0f} |")
    return [*lines, ""]


def _case_6(f: Figures) -> list[str]:
    if not f.backends:
        return []
    names = list(f.backends)
    bare = " · ".join(f"{b} {f.backend_bare[b].median * 1e9:.0f} ns" for b in names)
    lines = [
        "## 6. Backends: asyncio, uvloop, trio",
        "",
        "Ours on each backend, with the floors native to it, each against that backend's own "
        f"bare await (a bare await costs: {bare}). uvloop runs asyncio code on libuv; on trio "
        "the policies take their anyio paths (a cancel scope for the timeout, an `anyio.Event` "
        "for a bulkhead waiter).",
        "",
        "![Backends](img/benchmarks-backends.png)",
        "",
        "| contender | " + " | ".join(f"{b}: × bare, µs over" for b in names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    labels: list[tuple[str, str]] = []
    for backend in names:
        for r in f.backends[backend]:
            key = (r.contender.feature, r.contender.label)
            if key not in labels:
                labels.append(key)
    order = list(FEATURES)
    labels.sort(key=lambda k: (order.index(k[0]), k[1].startswith("resilient")))
    for feature, label in labels:
        cells = []
        kind = "floor"
        for backend in names:
            row = next(
                (
                    r
                    for r in f.backends[backend]
                    if (r.contender.feature, r.contender.label) == (feature, label)
                ),
                None,
            )
            if row is None:
                cells.append("–")
            else:
                kind = row.contender.kind
                cells.append(f"{row.ratio:.1f}× · {us(row.result.overhead)}")
        mark = _kind_mark(kind)
        shown = f"{label} (floor)" if kind == "floor" else label
        lines.append(f"| {feature}: {mark}{shown}{mark} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _breakdown(f: Figures) -> list[str]:
    lines = ["## Where our remaining cost goes", ""]
    if f.components:
        lines += [
            "Built up step by step, in one harness run: each row adds one thing to the row "
            "above it, so the differences are what each piece costs.",
            "",
            "| step | per call (µs) | over a bare await (µs) | × bare await |",
            "| --- | ---: | ---: | ---: |",
        ]
        for r in f.components:
            res = r.result
            mark = _kind_mark(r.contender.kind)
            lines.append(
                f"| {mark}{r.contender.label}{mark} | {us(res.median)} | "
                f"{us(res.overhead)} | {res.ratio:.1f} |"
            )
        lines.append("")
    if f.profile:
        lines += [
            "cProfile of the decorated `Pipeline(Fallback, Retry, CircuitBreaker, Bulkhead, "
            "Timeout)`, the functions with the most own time (cProfile's own cost per "
            "function call inflates small functions: read the shares, not absolute times):",
            "",
            "| function | calls per call | share of own time |",
            "| --- | ---: | ---: |",
        ]
        for label, per_call, share in f.profile:
            lines.append(f"| `{label}` | {per_call:.2f} | {share * 100:.1f} % |")
        lines.append("")
    if NOTES.exists():
        lines += [NOTES.read_text().strip(), ""]
    return lines


def write(f: Figures, docs: Path, quick: bool, command: str, log: Callable[[str], None]) -> None:
    img = docs / "img"
    img.mkdir(parents=True, exist_ok=True)
    if f.rows:
        chart_overhead(f, img / "benchmarks-overhead.png")
    if f.crowd:
        chart_crowd(f, img / "benchmarks-crowd.png")
    if f.backends:
        chart_backends(f, img / "benchmarks-backends.png")
    lines = _header(f, quick, command)
    lines += _verdict_lines(f)
    lines += _case_1(f) + _case_2_3(f) + _case_4(f) + _case_5(f) + _case_6(f) + _breakdown(f)
    page = docs / "benchmarks.md"
    page.write_text("\n".join(lines).rstrip() + "\n")
    log(f"wrote {page} and the charts in {img}")


def summary(f: Figures) -> str:
    """A few lines for the terminal."""
    out = []
    for v in verdicts(f):
        mark = "  -" if v.met is None else ("ok " if v.met else "NO ")
        out.append(f"{mark} {v.target}: {v.figure}")
    return "\n".join(out)


def _median(values: list[float]) -> float:
    return statistics.median(values)


__all__ = ["Result", "summary", "verdicts", "write"]
