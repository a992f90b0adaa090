"""Ray token authentication: a fresh secret per run, in a file only its owner can read.

    python -c "from cluster import auth; print(auth.write_token('/tmp/t'))"

How Ray 2.60 does it (ray/_private/authentication/authentication_token_setup.py):
``RAY_AUTH_MODE=token`` switches every Ray process (GCS, raylet, agents, workers,
drivers) to require ``authorization: Bearer <token>`` on its gRPC/HTTP endpoints. The
token is looked up, in this order, in ``$RAY_AUTH_TOKEN``, the file named by
``$RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``. We always use the file (a secret
in an environment variable leaks into ``ps e``-style dumps and child processes' logs)
and remove ``RAY_AUTH_TOKEN`` so a stray value can't take precedence.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")


def write_token(path: str | os.PathLike[str]) -> Path:
    """Write a new random token (256 bits, hex) to `path` with mode 0600, atomically.

    Readers never see a partial or world-readable file: the token goes to a 0600 temp
    file in the same directory, which then replaces `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is masked by umask; a reused file keeps its mode
        os.write(fd, secrets.token_hex(32).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def client_env(token_file: str | os.PathLike[str]) -> dict[str, str]:
    """Environment entries that make Ray processes/drivers use the token in `token_file`."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(Path(token_file).resolve())}


def scrubbed_env(base: dict[str, str], token_file: str | os.PathLike[str]) -> dict[str, str]:
    """`base` with token auth pointing at `token_file` and no competing token source."""
    env = {k: v for k, v in base.items() if k != "RAY_AUTH_TOKEN"}
    env.update(client_env(token_file))
    return env


def use_in_process(env: dict[str, str]) -> None:
    """Set Ray's auth variables in os.environ and make an already imported ``ray`` see
    them: Ray reads RAY_AUTH_MODE into its config once, so the config and the token cache
    are reloaded (as Ray's own authentication_token_setup._enable_token_auth does)."""
    os.environ.pop("RAY_AUTH_TOKEN", None)
    for key in AUTH_ENV:
        os.environ.pop(key, None)
    os.environ.update(env)
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]  # no stub

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def private_token(directory: Path | None = None) -> Iterator[Path]:
    """A fresh 0600 token in force for Ray in this process until exit: in ``directory``
    (a 0700 dir the caller owns and removes) or in a 0700 temp dir of its own.

    For a Ray instance this process starts itself: left alone, Ray 2.60 turns token auth
    on and keeps the token in ~/.ray/auth_token with mode 0644, readable by every user.
    """
    saved = {k: os.environ[k] for k in (*AUTH_ENV, "RAY_AUTH_TOKEN") if k in os.environ}
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bs-ray-")))
        token = write_token(Path(directory) / "token")
        use_in_process(client_env(token))
        try:
            yield token
        finally:
            use_in_process(saved)
