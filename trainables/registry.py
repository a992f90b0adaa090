"""Finding a study's trainable: a built-in registry name, a file, or a module.

    trainable = "fashion_mnist"              # built in (trainables/fashion_mnist.py)
    trainable = "mylab/train.py:train"       # a file: relative to the study file, then the cwd
    trainable = "mylab.train:train"          # a module importable from the cwd or PYTHONPATH

``resolve`` checks, before anything starts, that the file exists, the module imports, the
function is there and takes ``(config, report)``; each problem is one line (a
``UsageError``). The result, a ``TrainableRef``, is plain data: it travels to Ray workers
(pickled with the Tune trainable), where ``load`` imports the same file or module again.
A user's module may define ``TrainableConfig`` (a pydantic model of its
``[trainable_config]`` table, validated before anything starts) and ``METRICS`` (checked
against the study's target and early-stopping metrics); without them the table is passed
as it is and any metric name is accepted.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict

from trainables.contract import UsageError

# Modules are imported on first use: torch is slow to import and the CLI validates
# studies of every trainable without needing all of them.
BUILTIN: dict[str, str] = {
    "fashion_mnist": "trainables.fashion_mnist",
    "nqm": "trainables.nqm",
    "cifar10": "trainables.cifar10",
    "imagenet": "trainables.imagenet",
    "gpt": "trainables.gpt",
}
FUNCTION = "train"


class AnySettings(BaseModel):
    """The ``[trainable_config]`` of a trainable that defines no ``TrainableConfig``: as is."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True)
class TrainableRef:
    """Where a trainable lives, resolved."""

    spec: str
    """The study's ``trainable`` as frozen (a file path is made absolute)."""
    module: str
    """Module name (``trainables.nqm``, ``mylab.train``), or a private name for a file."""
    function: str
    """Name of the train function in the module."""
    file: str | None = None
    """Absolute path of a trainable given as a file."""
    root: str | None = None
    """sys.path entry the module was found under (the cwd or a PYTHONPATH entry)."""


def _split(spec: str) -> tuple[str, str]:
    target, sep, function = spec.rpartition(":")
    if not sep or not target or not function.isidentifier():
        raise UsageError(
            f"trainable: {spec!r} is neither a built-in ({', '.join(sorted(BUILTIN))}) "
            "nor FILE.py:FUNCTION nor MODULE:FUNCTION"
        )
    return target, function


def absolute(spec: str, base: Path | None = None) -> str:
    """``spec`` with a file path made absolute: relative to ``base`` (the study file's
    directory) if it exists there, else to the cwd. Built-ins and modules unchanged."""
    if spec in BUILTIN or ":" not in spec:
        return spec
    target, function = _split(spec)
    if not target.endswith(".py"):
        return spec
    for root in ([base] if base is not None else []) + [Path.cwd()]:
        path = (root / target).resolve()
        if path.is_file():
            return f"{path}:{function}"
    return spec  # resolve() names the missing file


def resolve(spec: str) -> TrainableRef:
    """Check the trainable and say where it lives; raises ``UsageError`` (one line)."""
    if spec in BUILTIN:
        return TrainableRef(spec=spec, module=BUILTIN[spec], function=FUNCTION)
    target, function = _split(spec)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"trainable: no such file {target}")
        path = path.resolve()
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        ref = TrainableRef(
            spec=f"{path}:{function}",
            module=f"_batchscale_user_{digest}_{path.stem}",
            function=function,
            file=str(path),
        )
    else:
        root = _find_root(target)
        if root is None:
            raise UsageError(f"trainable: no module {target!r} importable from {os.getcwd()} or PYTHONPATH")
        ref = TrainableRef(spec=spec, module=target, function=function, root=root)
    load_function(ref)  # import now: a broken module is bad input, not a failed sweep
    return ref


def _find_root(module: str) -> str | None:
    top = module.split(".")[0]
    for entry in [os.getcwd(), *os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path]:
        if entry and ((Path(entry) / top).is_dir() or (Path(entry) / f"{top}.py").is_file()):
            return str(Path(entry).resolve())
    return None


_LOADED: dict[str, ModuleType] = {}


def load(ref: TrainableRef) -> ModuleType:
    """Import the trainable's module (once per process)."""
    if ref.module in _LOADED:
        return _LOADED[ref.module]
    what = ref.file or ref.module
    try:
        if ref.file is not None:
            spec = importlib.util.spec_from_file_location(ref.module, ref.file)
            if spec is None or spec.loader is None:
                raise UsageError(f"trainable: cannot load {ref.file} as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[ref.module] = module  # dataclasses and pickling look the module up here
            spec.loader.exec_module(module)
        else:
            if ref.root is not None and ref.root not in sys.path:
                sys.path.insert(0, ref.root)  # a Ray worker's sys.path lacks the driver's cwd
            module = importlib.import_module(ref.module)
    except UsageError:
        raise
    except Exception as e:  # the user's module failed to import: its own exception, one line
        sys.modules.pop(ref.module, None)
        raise UsageError(
            f"trainable: importing {what} failed: {traceback.format_exception_only(e)[-1].strip()}"
        ) from None
    _LOADED[ref.module] = module
    return module


def load_function(ref: TrainableRef) -> Callable[..., None]:
    """The train function, checked to take ``(config, report)``."""
    module = load(ref)
    fn = getattr(module, ref.function, None)
    where = ref.file or ref.module
    if fn is None:
        defined = sorted(
            n
            for n, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")
        )
        raise UsageError(
            f"trainable: {ref.function!r} not found in {where}; it defines: {', '.join(defined) or 'no functions'}"
        )
    if not callable(fn):
        raise UsageError(f"trainable: {ref.function} in {where} is not a function")
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise UsageError(
            f"trainable: {ref.function}{inspect.signature(fn)} in {where} must take (config, report)"
        ) from None
    return fn


def config_model(ref: TrainableRef) -> type[BaseModel]:
    """The pydantic model of the trainable's ``[trainable_config]`` (``AnySettings`` if none)."""
    model = getattr(load(ref), "TrainableConfig", None)
    if model is None:
        return AnySettings
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        raise UsageError(f"trainable: TrainableConfig in {ref.file or ref.module} is not a pydantic model")
    return model


def metrics(ref: TrainableRef) -> tuple[str, ...] | None:
    """The metrics the trainable reports, or None when it does not say."""
    declared: Any = getattr(load(ref), "METRICS", None)
    return None if declared is None else tuple(declared)


def train_size(ref: TrainableRef, settings: BaseModel) -> int | None:
    """Training examples per epoch from the module's ``train_size(settings)``; None when it
    has none (its data are synthetic, or it does not say)."""
    count = getattr(load(ref), "train_size", None)
    return None if count is None else int(count(settings))


CAPABILITIES = ("SUBSETS", "BRANCHES", "SCHEDULES")
"""What a trainable's module may declare ``= True``: it trains on ``config.train_fraction``
of its data (``trainables.subsets``); it starts from ``config.init_state``
(``orchestrator.branching``); it follows ``config.schedule`` (``trainables.schedule.Plan``)."""


def declares(ref: TrainableRef, capability: str) -> bool:
    """Whether the trainable's module says ``<capability> = True`` (one of ``CAPABILITIES``)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")
    return getattr(load(ref), capability, False) is True


def preflight(ref: TrainableRef, settings: BaseModel) -> None:
    """The trainable's own check of what it needs (its data on disk), if it has one."""
    check = getattr(load(ref), "preflight", None)
    if check is not None:
        check(settings)
