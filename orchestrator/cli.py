"""The ``batchscale`` console script: the launcher, plus the other commands as subcommands.

batchscale --budget smoke                 # = python -m orchestrator.launch --budget smoke
batchscale report RUN_DIR [--out DIR]     # = python -m analysis.report
batchscale import SOURCE --out RUN_DIR    # = python -m analysis.import_sweep
batchscale follow RUN_DIR                 # = python -m orchestrator.follow
batchscale devslurm {up,down,status}      # = python -m cluster.devslurm
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "report":
        from analysis.report import main as report

        return report(rest)
    if command == "import":
        from analysis.import_sweep import main as import_sweep

        return import_sweep(rest, prog="batchscale import")
    if command == "follow":
        from orchestrator.follow import main as follow

        return follow(rest)
    if command == "devslurm":
        from cluster.devslurm.__main__ import main as devslurm

        return devslurm(rest)
    from orchestrator.launch import main as launch

    return launch(args, prog="batchscale")


if __name__ == "__main__":
    sys.exit(main())
