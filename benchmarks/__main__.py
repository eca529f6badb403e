"""``python -m benchmarks``: run the benchmark against the peers and write the docs page.

Usage (from the repository root, with the ``bench`` extra installed:
``pip install -e '.[bench]'``)::

    python -m benchmarks              # full run (a few minutes), writes docs/benchmarks.md
    python -m benchmarks --quick      # short rounds (under a minute), rough figures
    python -m benchmarks --cases 1,4  # some cases only
    python -m benchmarks --no-write   # print the verdicts, leave the docs alone
    python -m benchmarks soak [...]   # the chaos soak (benchmarks/soak.py), its own options
    python -m benchmarks breaker|bulkhead|chaos|observe [...]  # one policy in depth

The page and its charts (``docs/img/benchmarks-*.png``) are regenerated
whole by every run that writes them.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEEP_DIVES = {
    "breaker": "bench_breaker.py",
    "bulkhead": "bench_bulkhead.py",
    "chaos": "bench_chaos.py",
    "observe": "bench_observe.py",
}


def soak(argv: Sequence[str]) -> int:
    """Hand over to ``benchmarks/soak.py``'s ``main(argv)``, when it is there."""
    try:
        module = importlib.import_module("benchmarks.soak")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.soak":
            raise
        print("the soak (benchmarks/soak.py) is not in this checkout yet", file=sys.stderr)
        return 2
    return int(module.main(list(argv)) or 0)


def deep_dive(name: str, argv: Sequence[str]) -> int:
    """Run one of the per-policy scripts as if from the command line."""
    script = Path(__file__).with_name(DEEP_DIVES[name])
    sys.path.insert(0, str(script.parent))  # they import their harness as ``_harness``
    sys.argv = [str(script), *argv]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="resilient against its peers and the hand-rolled floors; writes "
        "docs/benchmarks.md and docs/img/benchmarks-*.png. Subcommands: soak, "
        + ", ".join(DEEP_DIVES)
        + " (each with its own --help).",
    )
    parser.add_argument("--quick", action="store_true", help="few, short rounds (< 1 minute)")
    parser.add_argument(
        "--cases",
        default="1,2,3,4,5,6,7",
        help="which cases to run, comma-separated (7: our cost broken down); default all",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch the docs")
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "docs", help="where benchmarks.md and img/ go"
    )
    parser.add_argument("--save", type=Path, help="also keep the figures in this file (pickle)")
    parser.add_argument(
        "--render", type=Path, help="run nothing: write the page from figures saved with --save"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "soak":
        return soak(argv[1:])
    if argv and argv[0] in DEEP_DIVES:
        return deep_dive(argv[0], argv[1:])
    args = parse(argv)
    from . import report
    from .suite import Settings, run_all

    try:
        cases = {int(c) for c in args.cases.split(",") if c.strip()}
    except ValueError:
        print(f"--cases: comma-separated numbers 1-7, got {args.cases!r}", file=sys.stderr)
        return 2
    settings = Settings.quick() if args.quick else Settings.full()
    if args.render is not None:
        figures, quick = pickle.loads(args.render.read_bytes())
        args.quick = quick
    else:
        figures = run_all(settings, cases)
    if args.save is not None:
        args.save.write_bytes(pickle.dumps((figures.portable(), args.quick)))
    print()
    print(report.summary(figures))
    if not args.no_write:
        command = "python -m benchmarks" + (" --quick" if args.quick else "")
        report.write(figures, args.docs, args.quick, command, print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
