"""The forgetting probe: at the end of a trial, the loss of its final weights on the batches
it trained on last, on the batches it trained on at the start of that epoch, and on
held-out data (Myrtle.ai, "How to train your ResNet 2": a model that forgets within an
epoch has the recent batches lower and the older ones back at the held-out level).

Both windows hold about ``examples`` training examples: the last ``k = ceil(examples / B)``
updates, and the first ``k`` updates that start inside the epoch of the last update (the
epoch before it when the two windows would overlap). ``probe_early_age_epochs`` is how
long before the end the early window began, in epochs. A trial too short for two separate
windows reports the recent and held-out losses and leaves the early one null.

    from trainables.forgetting import probe_windows
    probe_windows(steps=300, batch=256, n_train=55_000, examples=2048)
    # ProbeWindows(recent=range(292, 300), early=range(215, 223), early_age_epochs=0.395...)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainables.contract import FINAL_COLUMNS

PROBE_COLUMNS = tuple(c for c in FINAL_COLUMNS if c.startswith("probe_"))
"""The final row's (and trials.parquet's) columns of the probe."""


@dataclass(frozen=True)
class ProbeWindows:
    """The 0-based updates whose batches the probe measures."""

    recent: range
    """The last ``k`` updates of the trial."""
    early: range | None
    """The first ``k`` updates of the last update's epoch (or the one before); None when
    the trial is too short for a window apart from the recent one."""
    early_age_epochs: float | None
    """Epochs from the first example of ``early`` to the end of training."""


def probe_windows(steps: int, batch: int, n_train: int, examples: int) -> ProbeWindows:
    """The two windows of a trial that took ``steps`` updates of ``batch`` examples from
    epochs of ``n_train``."""
    k = min(steps, max(1, math.ceil(examples / batch)))
    recent = range(steps - k, steps)
    epoch = (recent.stop - 1) * batch // n_train  # the epoch the last update starts in
    for e in (epoch, epoch - 1):
        start = math.ceil(e * n_train / batch) if e >= 0 else -1
        if start >= 0 and start + k <= recent.start:
            return ProbeWindows(recent, range(start, start + k), (steps - start) * batch / n_train)
    return ProbeWindows(recent, None, None)
