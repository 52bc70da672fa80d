"""``anysr loadtest``: open-loop load tests of the HTTP server (the code lives in the ``loadtest`` package).

``loadtest`` speaks HTTP only; it never imports ``models`` or ``server``, and ``compare`` starts the
server as a subprocess (``python -m cli serve``).
"""

from __future__ import annotations

from loadtest.command import HELP, add_arguments, run

__all__ = ["HELP", "add_arguments", "run"]
