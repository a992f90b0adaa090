"""A real two-node Slurm cluster on this machine, for development and tests.

    python -m cluster.devslurm up       # idempotent; waits until n1 and n2 are idle
    python -m cluster.devslurm status
    SLURM_CONF=$PWD/.devslurm/etc/slurm.conf sinfo -N
    python -m cluster.devslurm down     # stops exactly the daemons `up` started

One munged, one slurmctld and two slurmd (``slurmd -N n1`` / ``-N n2``, both at
NodeAddr 127.0.0.1 on their own port), each node with 2 CPUs and 2 fake GPUs (gres
backed by /dev/null-like device nodes; plain files when not root). Everything (config,
munge key and socket, spool, logs, pid files) lives under one directory:
``<repo>/.devslurm/`` or ``$BATCHSCALE_DEVSLURM_DIR``. Nothing reads or writes /etc/slurm
or /etc/munge: every daemon and client gets ``SLURM_CONF``, and Slurm finds our munge
socket through ``AuthInfo=socket=...`` (munge's own tools take
``--socket``; there is no environment variable for it).

Python API: ``up()``, ``down()``, ``status()``, ``env()``, ``job_info()``,
``wait_job()``, ``node_states()``; ``up()`` returns a :class:`DevSlurm` whose ``.env``
holds what clients (sbatch, submitit) need. ``status`` exits 0 when the cluster runs, 3
when it doesn't.

Dev-cluster conveniences: requeued jobs restart after ~11 s (``cred_expire=10``), job ids
start at a per-directory ``FirstJobId``, and an epilog stops Ray processes a job left
behind (proctrack/linuxproc can't see daemonized processes).

Limits: accounting is off (no slurmdbd), so ``sacct`` fails and submitit's ``job.state``
reads ``UNKNOWN``; ``job.result()`` still works (it waits for the result file), and
``job_info()`` (scontrol) shows a job for 10 min after it ends.

Modules: ``layout`` (nodes, paths, ports, client env), ``config`` (files on disk),
``daemons`` (processes), ``api`` (what is exported here), ``__main__`` (the CLI). For
development only: nothing in the production path imports this package.
"""

from cluster.devslurm.api import DevSlurm, down, job_info, node_states, status, up, wait_job
from cluster.devslurm.layout import ENV_DIR, ENV_PORT, NODES, PARTITION, env, state_dir

__all__ = [
    "ENV_DIR",
    "ENV_PORT",
    "NODES",
    "PARTITION",
    "DevSlurm",
    "down",
    "env",
    "job_info",
    "node_states",
    "state_dir",
    "status",
    "up",
    "wait_job",
]
