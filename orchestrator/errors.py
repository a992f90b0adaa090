"""The one exception type that means "bad input": the CLI turns it into exit code 2."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad study file, flag or path. The message is one line and names the offending key."""


class SweepInterrupted(RuntimeError):
    """The sweep stopped before every trial finished; ``--resume RUN_DIR`` continues it."""
