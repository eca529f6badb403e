"""Benchmarks of resilient against its peers and hand-rolled floors (not part of the library).

Run from the repository root, with the ``bench`` extra installed
(``pip install -e '.[bench]'``)::

    python -m benchmarks            # writes docs/benchmarks.md and docs/img/benchmarks-*.png
    python -m benchmarks --quick    # a smoke run
    python -m benchmarks --help     # cases, subcommands (soak, breaker, bulkhead, chaos, observe)

What is where:

- ``_harness.py``: the timing harness (calibrated loops, warm-up, shuffled
  rounds, medians and spread, each timing paired with a bare await);
- ``contenders.py``: resilient, the hand-rolled floors and every peer, each
  built as its own documentation shows;
- ``suite.py``: the six cases and the breakdown of our own cost;
- ``report.py``: the docs page and its charts; ``notes.md``: the prose the
  page includes about where the remaining cost goes;
- ``bench_*.py``: one policy in depth each (``python -m benchmarks breaker``);
- ``soak.py``: the chaos soak (``python -m benchmarks soak``).
"""
