"""The Slurm options of a sweep job: the launcher's flags, the study's ``[slurm]`` table and
the user's ``~/.config/batchscale/slurm.toml``, in that order of precedence.

    [slurm]                                  # in a study file, or in ~/.config/batchscale/slurm.toml
    partition = "gpu"
    qos = "normal"
    constraint = "a100"
    mem_per_gpu = "40G"
    setup = ["module load cuda/12.4", "source ~/venvs/bs/bin/activate"]
    sbatch = ["licenses=scratch:1"]          # any other sbatch option, KEY=VALUE

Every option lands in the sbatch script that ``--dry-run`` prints; ``sbatch --test-only``
then refuses what the cluster cannot grant (an unknown QOS, feature or node, too much
memory) before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from trainables.contract import UsageError, read_toml

USER_DEFAULTS = Path("~/.config/batchscale/slurm.toml")
"""Per-user cluster defaults (``$BATCHSCALE_SLURM_DEFAULTS`` overrides the path)."""


@dataclass(frozen=True)
class SlurmFlags:
    """Slurm options of the sweep job (None: not given, use the default)."""

    nodes: int | None = None
    """``--nodes``: nodes of the allocation (default 1)."""
    gpus_per_node: int | None = None
    """``--gpus-per-node`` (default: enough for one trial)."""
    cpus_per_node: int | None = None
    """``--cpus-per-node`` (default: enough for the trials the node's GPUs hold, or one)."""
    partition: str | None = None
    """``--partition`` (default: the cluster's)."""
    account: str | None = None
    """``--account`` (default: the user's)."""
    time: str | None = None
    """``--time`` as [D-]HH:MM:SS (default 04:00:00)."""
    qos: str | None = None
    """``--qos``: quality of service."""
    constraint: str | None = None
    """``--constraint``: node features, e.g. ``a100`` or ``a100|h100``."""
    mem: str | None = None
    """``--mem``: memory per node, e.g. ``64G``."""
    mem_per_gpu: str | None = None
    """``--mem-per-gpu``, e.g. ``40G``."""
    exclude: str | None = None
    """``--exclude``: nodes not to use, e.g. ``node[01-03]``."""
    reservation: str | None = None
    """``--reservation``."""
    mail_user: str | None = None
    """``--mail-user``."""
    mail_type: str | None = None
    """``--mail-type``, e.g. ``END,FAIL``."""
    exclusive: bool | None = None
    """``--exclusive``: whole nodes."""
    sbatch: tuple[str, ...] = ()
    """Any other sbatch option as ``KEY=VALUE`` (submitit's additional parameters)."""
    setup: tuple[str, ...] = ()
    """Shell lines run before the job's Python, e.g. ``module load cuda/12.4``."""

    def __post_init__(self) -> None:
        for item in self.sbatch:
            key, sep, _ = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"--sbatch: expected KEY=VALUE, got {item!r}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def given(self) -> dict[str, Any]:
        """The options that were set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, ())}

    def over(self, lower: SlurmFlags) -> SlurmFlags:
        """These options where set, ``lower``'s elsewhere; setup lines and sbatch options
        add up (``lower``'s first, so a later KEY=VALUE wins)."""
        merged = {**lower.given(), **self.given()}
        merged["setup"] = (*lower.setup, *self.setup)
        merged["sbatch"] = (*lower.sbatch, *self.sbatch)
        return SlurmFlags(**merged)

    def additional_parameters(self) -> dict[str, str]:
        """``--sbatch`` and ``reservation`` as submitit's additional parameters."""
        extra = {k.strip().replace("-", "_"): v.strip() for k, v in (s.partition("=")[::2] for s in self.sbatch)}
        if self.reservation:
            extra["reservation"] = self.reservation
        return extra

    @staticmethod
    def add_to(group: argparse._ArgumentGroup) -> None:
        """The command-line flags, one per field (``--gpus-per-node`` for gpus_per_node)."""
        group.add_argument("--nodes", type=int, help="nodes of the allocation (default 1)")
        group.add_argument("--gpus-per-node", type=int, help="GPUs per node (default: enough for one trial)")
        group.add_argument("--cpus-per-node", type=int, help="CPUs per node (default: enough for one trial)")
        group.add_argument("--partition", help="Slurm partition")
        group.add_argument("--account", help="Slurm account")
        group.add_argument("--time", help="time limit HH:MM:SS (the job requeues itself at the limit)")
        group.add_argument("--qos", help="quality of service")
        group.add_argument("--constraint", help="node features, e.g. a100")
        group.add_argument("--mem", help="memory per node, e.g. 64G")
        group.add_argument("--mem-per-gpu", help="memory per GPU, e.g. 40G")
        group.add_argument("--exclude", help="nodes not to use, e.g. node[01-03]")
        group.add_argument("--reservation", help="Slurm reservation")
        group.add_argument("--mail-user", help="where Slurm mails job events")
        group.add_argument("--mail-type", help="which events, e.g. END,FAIL")
        group.add_argument("--exclusive", action="store_const", const=True, default=None, help="whole nodes")
        group.add_argument(
            "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option; repeatable"
        )
        group.add_argument(
            "--setup",
            action="append",
            default=[],
            metavar="LINE",
            help="a shell line run before the job's Python (module load ...); repeatable",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SlurmFlags:
        values = {name: getattr(args, name) for name in cls.names()}
        return cls(**{**values, "sbatch": tuple(values["sbatch"]), "setup": tuple(values["setup"])})


SlurmFlags.__pydantic_config__ = pydantic.ConfigDict(extra="forbid")  # type: ignore[attr-defined]
_ADAPTER: pydantic.TypeAdapter[SlurmFlags] = pydantic.TypeAdapter(SlurmFlags)


def from_table(table: dict[str, Any], where: str) -> SlurmFlags:
    """A ``[slurm]`` table as options; a bad key or value is a UsageError naming it."""
    try:
        return _ADAPTER.validate_python(table)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] in ("extra_forbidden", "unexpected_keyword_argument") else err["msg"]
        raise UsageError(f"{where}.{key}: {msg}") from None


def user_defaults() -> SlurmFlags:
    """The user's cluster defaults, or none."""
    path = Path(os.environ.get("BATCHSCALE_SLURM_DEFAULTS") or USER_DEFAULTS).expanduser()
    if not path.is_file():
        return SlurmFlags()
    return from_table(read_toml(path).get("slurm", {}), f"{path}: slurm")
