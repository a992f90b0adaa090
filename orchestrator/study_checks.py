"""The checks of a study that look past one table: against its trainable (the metrics it
reports, its training-set size for ``budget.max_epochs``, whether it trains on subsets) and
across tables (the protocol against the budget, the search strategy against its axes).
``orchestrator.study.validate`` runs them after pydantic; each problem is one
``UsageError`` naming the key.

    from orchestrator.study import load_study
    load_study("lr-policies", overrides=["budget.max_steps=100"])   # UsageError: budget.max_steps: ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.lr_spec import LrPolicies
from trainables.contract import UsageError

if TYPE_CHECKING:
    from orchestrator.study import Study


def check_metrics(study: Study) -> None:
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


def resolve_epochs(study: Study) -> Study:
    """The study with ``budget.max_epochs`` turned into ``budget.max_examples``."""
    import trainables

    b = study.budget
    if b.max_epochs is None:
        return study
    try:
        n = trainables.train_size(study.trainable, study.trainable_settings())
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
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


def check_protocol(study: Study) -> None:
    s = study.search
    if s.strategy == "adaptive" and (s.train_fraction != [1.0] or isinstance(s.lr, LrPolicies)):
        raise UsageError(
            "search.strategy: the adaptive search tunes one LR grid on all of the data (no lr.policies, no train_fraction)"
        )
    if study.protocol.kind != "fixed_budget":
        return
    if study.budget.max_steps is not None:
        raise UsageError(
            "budget.max_steps: a fixed_budget study gives every batch size the same examples; set max_examples only"
        )
    if study.budget.stop_at_target:
        raise UsageError("budget.stop_at_target: a fixed_budget study trains every trial to its budget")


def check_subsets(study: Study) -> None:
    import trainables

    if study.search.train_fraction != [1.0] and not trainables.supports_subsets(study.trainable):
        raise UsageError(
            f"search.train_fraction: trainable {study.trainable} does not train on subsets (its module "
            "does not declare SUBSETS = True; trainables.subsets)"
        )
