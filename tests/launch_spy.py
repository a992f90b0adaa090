"""``python -m orchestrator.launch`` with three test-only instruments (not a test module).

    python tests/launch_spy.py ARGS...      # the same arguments, exit code and output

- ``BS_TEST_CHECKPOINT_EVERY_S``: the adapter's checkpoint period (``run_sweep``'s
  ``checkpoint_every_s``, 60 s by default), so that a short test trial has a checkpoint.
- ``BS_TEST_FLUSH_EVERY_S``: how often the sink rewrites a running trial's curve
  (``run_sweep``'s ``flush_every_s``, 30 s by default), so that a test's kills land while
  trials of seconds are being written.
- ``BS_TEST_RESULTS_LOG``: a file that gets one JSON line per result the driver receives
  (``{"trial_id", "step"}``), in order, written by a spy on the sink's ``on_trial_result``
  (the Tune callback every result passes through), so a test sees which steps a resumed
  trial reports, not only the rows the sink kept.

Nothing else changes: the launcher's ``main`` runs the real path (study, run directory,
lease, local back-end, ``run_study``, Tune).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orchestrator.sweep  # noqa: E402
from orchestrator.launch import main  # noqa: E402
from orchestrator.sink import ParquetSink  # noqa: E402


def _install() -> None:
    kwdefaults = orchestrator.sweep.run_sweep.__kwdefaults__
    assert kwdefaults is not None
    for var, key in (("BS_TEST_CHECKPOINT_EVERY_S", "checkpoint_every_s"), ("BS_TEST_FLUSH_EVERY_S", "flush_every_s")):
        if os.environ.get(var) is not None:
            assert key in kwdefaults
            kwdefaults[key] = float(os.environ[var])
    log = os.environ.get("BS_TEST_RESULTS_LOG")
    if log is not None:
        original = ParquetSink.on_trial_result

        def on_trial_result(self, iteration, trials, trial, result, **info):  # type: ignore[no-untyped-def]
            with open(log, "a") as f:
                f.write(json.dumps({"trial_id": trial.trial_id, "step": result.get("step")}) + "\n")
            return original(self, iteration, trials, trial, result, **info)

        ParquetSink.on_trial_result = on_trial_result  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()
    sys.exit(main(sys.argv[1:]))
