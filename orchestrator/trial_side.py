"""What a trial's process knows about itself: the node it runs on, and how its own
exception is told in one line. Shared by the adapter (one process) and the workers of a
data-parallel trial (``orchestrator.workers``)."""

from __future__ import annotations

import socket
import traceback

import ray

from cluster.ray_spec import NODE_LABEL


def error_line(exc: BaseException) -> str:
    """The last line of an exception's traceback, e.g. ``ValueError: lr must be positive``."""
    return traceback.format_exception_only(exc)[-1].strip()


def node_name() -> str:
    """The Ray node's name label (the Slurm node name, set by ``cluster.ray_node`` when the
    job starts it), else the host name (a local run)."""
    label: object = ray.get_runtime_context().get_node_labels().get(NODE_LABEL)
    if isinstance(label, list):  # typed as a list of values in Ray 2.60, a str in practice
        label = label[0] if label else None
    return str(label) if label else socket.gethostname()
