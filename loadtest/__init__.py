"""Open-loop load testing for AnySR Serve, over HTTP only (no ``models`` or ``server`` imports).

Pieces, in the order a run uses them: ``workload`` (spec files) → ``images`` (request bodies) →
``plan`` (which request when) and ``arrivals`` (when) → ``client`` (the open-loop sender) →
``session`` (phases with ``/metrics`` scrapes, via ``scrape``) → ``calibrate`` (full-width capacity),
``experiment`` (sweep + ``overload``) → ``orchestrate`` (one server, or one per policy via
``server_process``) → ``results``, ``plots``, ``report``. ``stats`` and ``quality`` hold the arithmetic.
The command line is ``command`` (``anysr loadtest`` / ``python -m loadtest``).
"""
