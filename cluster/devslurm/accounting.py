"""The dev cluster's accounting, set up with ``sacctmgr -i`` like a real site's: the cluster,
two accounts (``lab-a``, ``lab-b``), the current user associated with both (default
``lab-a``), and three QOS: ``normal``, ``short`` (a low MaxWall and one GPU per user,
refused at submission: DenyOnLimit) and ``restricted``, which the user may not use.

Idempotent: every call reads what slurmdbd holds and adds or changes only what differs,
so a second ``up`` reuses the database and duplicates nothing.
"""

from __future__ import annotations

import functools
import os
import pwd
import subprocess
from collections.abc import Callable

from cluster.devslurm.daemons import client, wait_for
from cluster.devslurm.layout import CLUSTER_NAME, Layout

ACCOUNTS: tuple[str, ...] = ("lab-a", "lab-b")
DEFAULT_ACCOUNT = "lab-a"
USER_QOS: tuple[str, ...] = ("normal", "short")  # what the user's associations allow
DEFAULT_QOS = "normal"
# QOS -> {sacctmgr option: value}. `restricted` exists but no association allows it.
QOS: dict[str, dict[str, str]] = {
    "normal": {},
    "short": {"MaxWall": "00:10:00", "MaxTRESPerUser": "gres/gpu=1", "Flags": "DenyOnLimit"},
    "restricted": {},
}
_SHOWN_AS = {"MaxWall": "MaxWall", "MaxTRESPerUser": "MaxTRESPU", "Flags": "Flags"}
# slurmdbd learns the gres/gpu TRES only when slurmctld first registers with it
# (AccountingStorageTRES); until then sacctmgr refuses limits that name it.
_TRES_OPTIONS = {"MaxTRESPerUser"}


def sacctmgr(lay: Layout, *argv: str) -> str:
    """Run ``sacctmgr -i`` (no prompts) against the cluster's slurmdbd; stdout, or raise."""
    try:
        res = client(lay, "sacctmgr", "-i", *argv, timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"devslurm: sacctmgr {' '.join(argv)} timed out") from exc
    if res.returncode != 0:
        raise RuntimeError(f"devslurm: sacctmgr {' '.join(argv)} failed: {(res.stderr or res.stdout).strip()}")
    return res.stdout


def _rows(lay: Layout, entity: str, fields: str, *where: str) -> list[list[str]]:
    """``sacctmgr show ENTITY format=FIELDS [where ...]`` as rows of fields."""
    out = sacctmgr(lay, "-n", "-P", "show", entity, f"format={fields}", *where)
    return [line.split("|") for line in out.splitlines() if line.strip()]


def current_user() -> str:
    """The user jobs are submitted as (Slurm goes by the uid, not $USER)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def gpu_tres_known(lay: Layout) -> bool:
    return ["gres", "gpu"] in _rows(lay, "tres", "type,name")


def provision(lay: Layout, user: str | None = None) -> tuple[list[str], bool]:
    """Bring slurmdbd's cluster, accounts, QOS and associations to the wanted state.

    Returns (the changes made, as sacctmgr arguments; whether everything is in place).
    Not in place only while the gres/gpu TRES is unknown (slurmctld has never
    registered): call again once it has (see ``finish``). When nothing is missing this
    costs three ``sacctmgr show`` (each ~0.2 s: sacctmgr's persistent connection).
    """
    user = user or current_user()
    done: list[str] = []

    def run(*argv: str) -> None:
        sacctmgr(lay, *argv)
        done.append(" ".join(argv))

    # A cluster's own root association always exists: no rows means no cluster.
    rows = _rows(lay, "assoc", "account,user,qos,defaultqos", f"cluster={CLUSTER_NAME}")
    if not rows:
        run("add", "cluster", CLUSTER_NAME)
    complete = provision_qos(lay, run)
    accounts = {r[0] for r in rows if not r[1]}
    if missing := [a for a in ACCOUNTS if a not in accounts]:
        run("add", "account", ",".join(missing), f"Cluster={CLUSTER_NAME}",
            "Description=batchscale dev lab", "Organization=batchscale")  # fmt: skip
    qos_options = (f"QOS={','.join(USER_QOS)}", f"DefaultQOS={DEFAULT_QOS}")
    mine = {r[0]: r for r in rows if r[1] == user}
    if missing := [a for a in ACCOUNTS if a not in mine]:
        run("add", "user", user, f"Account={','.join(missing)}", f"Cluster={CLUSTER_NAME}",
            f"DefaultAccount={DEFAULT_ACCOUNT}", *qos_options)  # fmt: skip
    wrong = [
        a for a in ACCOUNTS if a in mine
        and (set(mine[a][2].split(",")) - {""} != set(USER_QOS) or mine[a][3] != DEFAULT_QOS)
    ]  # fmt: skip
    if wrong:
        run("modify", "user", "where", f"name={user}", f"account={','.join(wrong)}",
            f"cluster={CLUSTER_NAME}", "set", *qos_options)  # fmt: skip
    if _rows(lay, "user", "defaultaccount", f"name={user}") != [[DEFAULT_ACCOUNT]]:
        run("modify", "user", "where", f"name={user}", "set", f"DefaultAccount={DEFAULT_ACCOUNT}")
    return done, complete


def provision_qos(lay: Layout, run: Callable[..., object] | None = None) -> bool:
    """Add missing QOS and set their limits (through `run`, default: sacctmgr); False
    if a TRES limit had to wait."""
    if run is None:
        run = functools.partial(sacctmgr, lay)
    fields = ["name", *_SHOWN_AS.values()]
    have = {r[0]: dict(zip(fields, r)) for r in _rows(lay, "qos", ",".join(fields))}
    if missing := [name for name in QOS if name not in have]:
        run("add", "qos", ",".join(missing))
    tres_known: bool | None = None  # asked only when a TRES limit is to be set
    complete = True
    for name, options in QOS.items():
        change = {k: v for k, v in options.items() if have.get(name, {}).get(_SHOWN_AS[k]) != v}
        if _TRES_OPTIONS & change.keys():
            tres_known = gpu_tres_known(lay) if tres_known is None else tres_known
            if not tres_known:
                change = {k: v for k, v in change.items() if k not in _TRES_OPTIONS}
                complete = False
        if change:
            run("modify", "qos", "where", f"name={name}", "set",
                *(f"{k}={v}" for k, v in change.items()))  # fmt: skip
    return complete


def finish(lay: Layout, timeout: float = 30.0) -> None:
    """After slurmctld is up: wait until slurmdbd knows gres/gpu, then set the QOS
    limits ``provision`` had to leave out."""
    what = (
        "slurmctld to register gres/gpu with slurmdbd (a slurmctld started with an "
        "older slurm.conf needs `python -m cluster.devslurm down` then `up`)"
    )
    wait_for(what, lambda: gpu_tres_known(lay), timeout, poll=0.5, log=lay.log / "slurmctld.log")
    assert provision_qos(lay)
