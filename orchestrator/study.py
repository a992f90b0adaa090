"""The study specification: a TOML file validated by pydantic (unknown keys are errors).

    from orchestrator.study import load_study
    study = load_study("fashion-mnist", overrides=["search.seeds=2"], budget="smoke")
    print(study.search.batch_sizes)

The layout is fixed by ``../shared/CONTRACTS.md`` ("study file").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, Field

from orchestrator.branching_spec import Branching
from orchestrator.lr_spec import LR_FORM_TAGS, LrGrid, LrPolicies, LrRangeTest, LrRule, Strict, lr_form
from orchestrator.overrides import apply_overrides
from orchestrator.schedule_spec import Schedule, train_size_of
from orchestrator.tracking_spec import Tracking
from trainables.contract import Target, UsageError, read_toml, step_cap

STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"
DEFAULT_STUDY = "fashion-mnist"

PositiveInt = Annotated[int, Field(gt=0)]


class Adaptive(Strict):
    """Settings of ``strategy = "adaptive"`` (``orchestrator.adaptive``)."""

    order: Literal["small_to_large", "outside_in"] = "small_to_large"
    """Order the batch sizes are visited in: ascending, or alternately smallest and largest."""
    fit_points: int = Field(default=4, ge=2)
    """The LR rule predicting a batch size's centre is fitted on this many nearest batch sizes."""
    stop_factor: float = Field(default=4.0, ge=0)
    """A trial ends unreached after this many times the fewest steps to target found at any
    batch size up to its own (0: the study's budget only)."""


class Search(Strict):
    """The outer batch-size grid and the inner learning-rate search."""

    batch_sizes: list[PositiveInt] = Field(min_length=1)
    """Global batch sizes of one optimizer update (distinct)."""
    lr: Annotated[
        Annotated[LrGrid, pydantic.Tag("lr_grid")]
        | Annotated[LrRule, pydantic.Tag("lr_rule")]
        | Annotated[LrPolicies, pydantic.Tag("lr_policies")]
        | Annotated[LrRangeTest, pydantic.Tag("lr_range")],
        pydantic.Discriminator(lr_form),
    ]
    """Learning rates: a grid ``{min, max, points}``, a rule-centred grid ``{rule, base_batch,
    base_lr, decades, points}``, LR policies ``{policies, base_batch, base_lr, tuned}`` or a
    grid centred by an LR range test ``{range_test = {min, max, steps}, decades, points}``."""
    train_fraction: list[Annotated[float, Field(gt=0, le=1)]] = Field(default=[1.0], min_length=1)
    """Fractions of the training set to sweep (``trainables.subsets``: fixed, seeded, nested
    subsets, the same at every batch size and LR); early stopping and the analysis compare
    trials only within one (batch size, fraction). The steps-to-target analysis uses the
    largest fraction; the report's "Curvature or forgetting" section compares them all."""
    seeds: PositiveInt = 1
    """Seeds per (batch size, learning rate)."""
    optimizer: Literal["sgd", "adamw", "lars"] = "sgd"
    """Optimizer of every trial."""
    momentum: float = Field(default=0.9, ge=0, lt=1)
    """Heavy-ball momentum (sgd, lars) or beta1 (adamw)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """Weight decay (decoupled for adamw)."""
    warmup_examples: int = Field(default=0, ge=0)
    """Linear learning-rate warmup length, in examples (so it is comparable across batch sizes)."""
    strategy: Literal["grid", "adaptive"] = "grid"
    """grid: every LR of the grid at every batch size; adaptive: a bracketing search on the
    grid per batch size, centred by the LR rule fitted so far (``orchestrator.adaptive``)."""
    adaptive: Adaptive = Adaptive()
    """Settings of the adaptive search."""

    @pydantic.field_validator("batch_sizes", "train_fraction")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        if len(set(v)) != len(v):
            raise ValueError("values must be distinct")
        return sorted(v)


class Budget(Strict):
    """How long one trial may train."""

    max_examples: PositiveInt | None = None
    """Cap on examples seen per trial."""
    max_steps: PositiveInt | None = None
    """Cap on optimizer updates per trial (the tighter of the two caps applies)."""
    max_epochs: float | None = Field(default=None, gt=0)
    """Cap in epochs of the full training set, for a trainable that says how large it is
    (``train_size``); resolved at validation into ``max_examples``, which it must then
    equal if both are given."""
    stop_at_target: bool | None = None
    """End a trial as soon as it reaches the target (default: true for steps_to_target,
    false for fixed_budget, which may not set it true)."""
    max_micro_batch: PositiveInt = 4096
    """Largest forward/backward pass; larger batches accumulate (averaged) gradients."""

    @pydantic.model_validator(mode="after")
    def _some_cap(self) -> Budget:
        if self.max_examples is None and self.max_steps is None and self.max_epochs is None:
            raise ValueError("set max_examples, max_epochs or max_steps")
        return self

    def examples_cap(self, batch_size: int) -> int:
        """The per-trial cap in examples for one batch size: its step cap times B."""
        return step_cap(batch_size, self.max_steps, self.max_examples) * batch_size


class Protocol(Strict):
    """What the study measures (``[protocol]``)."""

    kind: Literal["steps_to_target", "fixed_budget"] = "steps_to_target"
    """steps_to_target (Shallue et al. 2018): trials end at the target, the analysis counts
    the steps; fixed_budget: every batch size trains on the same ``budget.max_examples``
    (set alone: no max_steps), nothing stops at the target, and the report compares the
    LR policies at equal epochs ("Equal-budget comparison")."""


class EarlyStopping(Strict):
    """Successive halving over examples seen, one set of rungs per batch size."""

    scheduler: Literal["asha", "sha", "none"] = "asha"
    """asha: asynchronous successive halving (a trial is compared with those that reached
    its rung before it); sha: synchronous (a rung waits for every trial of the batch size,
    pausing those that are there); none: run the full grid."""
    per_batch_size: bool = True
    """Compare trials only within one batch size (a batch-size study needs this)."""
    metric: str = "val_loss"
    """Metric the rungs compare."""
    mode: Literal["min", "max"] = "min"
    """Direction of ``metric``."""
    grace_examples: PositiveInt = 60000
    """Examples every trial sees before it can be stopped (first rung)."""
    reduction_factor: float = Field(default=3, gt=1)
    """Each rung keeps the best 1/reduction_factor of the trials that reached it."""


class Resources(Strict):
    """What one trial occupies; Ray packs trials onto the allocation."""

    cpus_per_trial: float = Field(default=1, gt=0)
    """CPU cores per trial (also the trial's torch thread count, rounded up)."""
    gpus_per_trial: float = Field(default=0, ge=0)
    """GPUs per trial; fractional values pack several trials onto one GPU."""
    workers_per_trial: int = Field(default=1, ge=1)
    """Processes one trial runs as, data-parallel with ``torch.distributed`` (NCCL on GPUs,
    gloo on CPUs), placed by Ray on one node or across nodes: each trains on
    ``batch_size / workers_per_trial`` examples of every batch (which it must divide) and
    gradients are averaged once per update, so a learning rate means the same at every
    count. The trial occupies ``workers_per_trial`` times the per-worker resources."""
    cpus_per_worker: float | None = Field(default=None, gt=0)
    """CPU cores of each worker (its torch thread count, rounded up); default cpus_per_trial."""
    gpus_per_worker: float | None = Field(default=None, ge=0)
    """GPUs of each worker; default gpus_per_trial. With workers_per_trial > 1 a whole
    number (NCCL runs one rank per GPU)."""

    @property
    def worker_cpus(self) -> float:
        """CPU cores of one worker (of the trial itself when workers_per_trial = 1)."""
        return self.cpus_per_trial if self.cpus_per_worker is None else self.cpus_per_worker

    @property
    def worker_gpus(self) -> float:
        """GPUs of one worker (of the trial itself when workers_per_trial = 1)."""
        return self.gpus_per_trial if self.gpus_per_worker is None else self.gpus_per_worker

    def check_batch_sizes(self, batch_sizes: list[int]) -> None:
        """Raise ``UsageError`` (one line, naming the key) unless every batch size splits
        into equal worker shares, and data-parallel workers take whole GPUs."""
        n = self.workers_per_trial
        if n == 1:
            return
        if self.worker_gpus != int(self.worker_gpus):
            raise UsageError(
                f"resources.gpus_per_worker: {self.worker_gpus} GPUs per worker with workers_per_trial "
                f"= {n}; a data-parallel worker takes whole GPUs (NCCL runs one rank per GPU)"
            )
        for b in batch_sizes:
            if b % n:
                raise UsageError(
                    f"resources.workers_per_trial: {n} workers do not divide search.batch_sizes "
                    f"value {b} (each worker trains on an equal share of every batch)"
                )


class Study(Strict):
    """One batch-size × learning-rate study."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Study name (letters, digits, ``-_.``): used in RUN_DIR names and the curves."""
    trainable: str
    """A built-in registry name (``fashion_mnist``, ``nqm``), ``FILE.py:FUNCTION`` (relative to
    the study file, then the cwd; frozen absolute) or ``MODULE:FUNCTION`` (importable from
    the cwd or PYTHONPATH); see ``trainables.registry``."""
    trainable_config: dict[str, Any] = Field(default_factory=dict)
    """Passed through to the trainable, validated by its ``TrainableConfig``."""
    search: Search
    budget: Budget
    target: Target
    protocol: Protocol = Protocol()
    early_stopping: EarlyStopping = EarlyStopping()
    resources: Resources = Resources()
    slurm: dict[str, Any] = Field(default_factory=dict)
    """Slurm options of the sweep job (``cluster.slurm_flags.SlurmFlags``: qos, constraint,
    mem, setup lines, ...); the launcher's flags win over them."""
    tracking: Tracking = Tracking()
    """Experiment trackers (MLflow, TensorBoard, W&B) the sweep logs every trial to."""
    branching: Branching | None = None
    """A local critical batch size by branching from a base run's checkpoints, run after the sweep."""
    schedule: Schedule | None = None
    """LR shape, LR decay or batch increase at milestones (``orchestrator.schedule_spec``)."""

    @property
    def stops_at_target(self) -> bool:
        """Whether a trial ends at the target: ``budget.stop_at_target``, else the protocol's default."""
        if self.budget.stop_at_target is not None:
            return self.budget.stop_at_target
        return self.protocol.kind == "steps_to_target"

    @pydantic.field_validator("trainable")
    @classmethod
    def _trainable_known(cls, v: str) -> str:
        from trainables.registry import resolve

        try:
            return resolve(v).spec
        except UsageError as e:
            raise ValueError(str(e).removeprefix("trainable: ")) from None

    def trainable_settings(self) -> BaseModel:
        """The validated ``[trainable_config]`` with the trainable's defaults filled in."""
        import trainables

        return trainables.config_model(self.trainable).model_validate(self.trainable_config)


def _first_error(err: pydantic.ValidationError, prefix: str = "") -> str:
    e = err.errors()[0]
    parts = list(e["loc"])
    loc = ".".join(str(p) for i, p in enumerate(parts) if not (i and parts[i - 1] == "lr" and _is_union_tag(p)))
    key = ".".join(p for p in (prefix, loc) if p) or "study"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "missing":
        msg = "required key is missing"
    got = e.get("input")
    shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
    return f"{key}: {msg}{shown}"


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member it tried in the location (after search.lr); users never
    # wrote it, and a key of the same name elsewhere (branching.lr_rule) is one they did.
    return isinstance(part, str) and part in LR_FORM_TAGS


def study_path(name_or_path: str | None) -> Path:
    """Resolve ``--study``: a built-in name under studies/ or a path to a TOML file."""
    name_or_path = name_or_path or DEFAULT_STUDY
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists() or "/" in name_or_path:
        if not p.is_file():
            raise UsageError(f"--study: no such file {name_or_path}")
        return p
    builtin = STUDIES_DIR / f"{name_or_path}.toml"
    if not builtin.is_file():
        known = ", ".join(sorted(q.stem for q in STUDIES_DIR.glob("*.toml")))
        raise UsageError(f"--study: unknown study {name_or_path!r} (built-in: {known})")
    return builtin


def validate(raw: dict[str, Any]) -> Study:
    """Validate a study dict; any problem is a one-line UsageError naming the key."""
    try:
        study = Study.model_validate(raw)
    except pydantic.ValidationError as e:
        raise UsageError(_first_error(e)) from None
    try:
        study.trainable_settings()
    except pydantic.ValidationError as e:
        raise UsageError(_first_error(e, prefix="trainable_config")) from None
    from cluster.slurm_flags import from_table

    study = _resolve_epochs(study)
    from_table(study.slurm, "slurm")  # a bad [slurm] key is bad input on every back-end
    _check_metrics(study)
    _check_protocol(study)
    _check_subsets(study)
    study.resources.check_batch_sizes(study.search.batch_sizes)
    from orchestrator.schedule_spec import resolved

    study = resolved(study)
    if study.branching is not None:
        study.branching.check(trainable=study.trainable, warmup_examples=study.search.warmup_examples)
        study.resources.check_batch_sizes(study.branching.batch_sizes())
    return study


# The checks below look past one table: against the trainable (the metrics it reports, its
# training-set size for budget.max_epochs, whether it trains on subsets) and across tables.


def _check_metrics(study: Study) -> None:
    # A misspelt metric would otherwise run the whole sweep: ASHA would never see it (and
    # prune nothing) and no trial would ever reach the target.
    import trainables

    known = trainables.metrics(study.trainable)
    if known is None:
        return  # a user's trainable that does not declare METRICS: nothing to check against
    keys = [("target.metric", study.target.metric)]
    if study.early_stopping.scheduler != "none":
        keys.append(("early_stopping.metric", study.early_stopping.metric))
    for key, metric in keys:
        if metric not in known:
            raise UsageError(
                f"{key}: {metric!r} is not reported by trainable {study.trainable} (it reports {', '.join(known)})"
            )


def _resolve_epochs(study: Study) -> Study:
    """The study with ``budget.max_epochs`` turned into ``budget.max_examples``."""
    b = study.budget
    if b.max_epochs is None:
        return study
    n = train_size_of(study)
    if n is None:
        raise UsageError(
            f"budget.max_epochs: trainable {study.trainable} does not say how large its training set is "
            "(no train_size); set budget.max_examples"
        )
    examples = max(1, round(b.max_epochs * n))
    if b.max_examples is not None and b.max_examples != examples:
        raise UsageError(
            f"budget.max_examples: {b.max_examples} conflicts with budget.max_epochs = {b.max_epochs:g} "
            f"({examples} examples of {n}); set one"
        )
    return study.model_copy(update={"budget": b.model_copy(update={"max_examples": examples})})


def _check_protocol(study: Study) -> None:
    s = study.search
    if s.strategy == "adaptive" and (s.train_fraction != [1.0] or isinstance(s.lr, LrPolicies | LrRangeTest)):
        raise UsageError(
            "search.strategy: the adaptive search tunes one LR grid on all of the data "
            "(no lr.policies, no lr.range_test, no train_fraction)"
        )
    if study.protocol.kind != "fixed_budget":
        return
    if study.budget.max_steps is not None:
        raise UsageError(
            "budget.max_steps: a fixed_budget study gives every batch size the same examples; set max_examples only"
        )
    if study.budget.stop_at_target:
        raise UsageError("budget.stop_at_target: a fixed_budget study trains every trial to its budget")


def _check_subsets(study: Study) -> None:
    import trainables

    if study.search.train_fraction != [1.0] and not trainables.declares(study.trainable, "SUBSETS"):
        raise UsageError(
            f"search.train_fraction: trainable {study.trainable} does not train on subsets (its module "
            "does not declare SUBSETS = True; trainables.subsets)"
        )


def load_study(
    name_or_path: str | None = None,
    overrides: list[str] | None = None,
    budget: Literal["full", "smoke"] = "full",
) -> Study:
    """Read, override (``--set``), shrink (``--budget smoke``) and validate a study."""
    path = study_path(name_or_path)
    raw = apply_overrides(read_toml(path), overrides or [])
    if isinstance(raw.get("trainable"), str):
        # a trainable file is found relative to the study file first, and frozen absolute
        from trainables.registry import absolute

        raw["trainable"] = absolute(raw["trainable"], base=path.parent)
    study = validate(raw)
    if budget == "smoke":
        from orchestrator.smoke import shrink

        study = validate(shrink(study.model_dump(mode="python", exclude_none=True)))
    return study
