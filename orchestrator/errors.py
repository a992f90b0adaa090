"""The sweep's own failure (bad input is ``trainables.contract.UsageError``, exit 2)."""

from __future__ import annotations


class SweepInterrupted(RuntimeError):
    """The sweep stopped before every trial finished; ``--resume RUN_DIR`` continues it."""
