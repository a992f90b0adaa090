"""``--set KEY=VALUE`` overrides: dotted keys into the study dict, TOML values.

    apply_overrides({"search": {"seeds": 1}}, ["search.seeds=3", "trainable_config.model=cnn"])

A value is parsed as TOML (``[16, 32]``, ``0.1``, ``true``, ``"text"``); a bare word that is
not valid TOML is taken as a string, so ``model=cnn`` works without quotes.
"""

from __future__ import annotations

import copy
import tomllib
from typing import Any

from trainables.contract import UsageError


def parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``KEY=VALUE`` applied in order."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set: expected KEY=VALUE with a dotted key, got {item!r}")
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a table")
            node = child
        node[parts[-1]] = parse_value(value.strip())
    return out
