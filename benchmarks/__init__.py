"""Speed and memory benchmarks of AnySR Serve; ``python -m benchmarks.suite`` runs them all (docs/benchmarks.md).

``bench_widths.py`` and ``bench_server_overhead.py`` also run alone as scripts; the suite imports their
functions. Nothing in ``models/`` or ``server/`` imports this package.
"""
