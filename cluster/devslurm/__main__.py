"""The dev cluster's CLI: ``python -m cluster.devslurm {up,down,status} [--dir DIR]``.

``status`` exits 0 when the cluster runs, 3 when it doesn't; errors exit 1.
"""

from __future__ import annotations

import argparse
import sys

import cluster.devslurm as ds
from cluster.devslurm.layout import ENV_DIR, daemon_ports, state_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.devslurm", description=(ds.__doc__ or "").split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=None, help=f"state directory (default ${ENV_DIR} or <repo>/.devslurm)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster = ds.up(args.dir)
            how = "started" if cluster.started else "already running"
            print(f"devslurm up ({how}): nodes {', '.join(cluster.nodes)}")
            print(f"  export SLURM_CONF={cluster.conf}")
        elif args.command == "down":
            pids = ds.down(args.dir)
            print(f"devslurm down: stopped {len(pids)} process(es) {pids}")
        else:
            st = ds.status(args.dir)
            ports = daemon_ports(state_dir(args.dir))
            print(f"state dir: {st['state_dir']}")
            for name, pid in st["daemons"].items():
                where = f"  port {ports[name]}" if name in ports else ""
                print(f"  {name:12s} {'pid ' + str(pid) if pid else 'not running'}{where}")
            for node, state in st["nodes"].items():
                print(f"  node {node}: {state}")
            print("running" if st["running"] else "not running")
            return 0 if st["running"] else 3
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
