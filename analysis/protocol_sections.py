"""The report's sections beyond steps to target, each present only where the run has its
data: "Equal-budget comparison" (LR policies at equal examples, ``analysis.equal_budget``),
"Curvature or forgetting" (LR sweeps on training subsets, ``analysis.curvature``) and
"Forgetting probe" (``analysis.probe``). Each holds its own figure and table, so
``document.build_document`` leaves them out of its general lists (``SECTION_ITEMS``).

    from analysis.protocol_sections import protocol_sections
    blocks = protocol_sections(a, figures, tables)    # a: analysis.fits.analyse(...)
"""

from __future__ import annotations

import numpy as np

from .curvature import EDGE_STEPS, FORGETTING_RISE, SAME_STEPS, curvature_forgetting
from .equal_budget import equal_budget
from .figure_style import FigureFile
from .numbers import format_number
from .range_test import MARGIN
from .render import Block, Bullets, Figure, Heading, Paragraph, Table
from .results import Analysis
from .tables import TableFile

SECTION_ITEMS = frozenset(
    {"equal_budget", "curvature_forgetting", "forgetting_probe", "branching", "schedules", "range_test"}
)
"""Figure and table names that belong to these sections, not to the general lists."""


def protocol_summary(a: Analysis) -> list[str]:
    """The summary's bullets on these protocols (none for a plain steps-to-target run)."""
    out = []
    budget = a.run.study.get("budget", {})
    if a.run.study.get("protocol", {}).get("kind") == "fixed_budget":
        out.append(
            f"Protocol `fixed_budget`: every batch size trains on {budget.get('max_examples', 0):,} examples and "
            "none stops at the target; steps to target count the trials that reached it on the way."
        )
    if (eb := equal_budget(a)) is not None and eb.findings:
        out.append("Equal budget: " + eb.findings[0][0].lower() + eb.findings[0][1:])
    if (rt := a.range_test) is not None:
        out.append("LR range test: " + rt.findings[0][0].lower() + rt.findings[0][1:])
    if a.schedules is not None and a.schedules.findings:
        out.append("LR decay vs batch increase: " + a.schedules.findings[0][0].lower() + a.schedules.findings[0][1:])
    if a.branched is not None and (found := branching_findings(a)):
        out.append("Branching: " + found[0][0].lower() + found[0][1:])
    if (cf := curvature_forgetting(a)) is not None:
        out.append(
            "What limits the LR (LR sweeps on training subsets): "
            + "; ".join(f"B={b} {v.verdict}" for b, v in sorted(cf.verdicts.items()))
            + "."
        )
    return out


def protocol_sections(a: Analysis, figures: list[FigureFile], tables: list[TableFile]) -> list[Block]:
    """The sections the run has data for, in report order."""
    fig = {f.name: f for f in figures}
    tab = {t.name: t for t in tables}
    blocks: list[Block] = []
    if (eb := equal_budget(a)) is not None:
        blocks += [
            Heading("Equal-budget comparison"),
            Paragraph(
                "Every batch size trains on the same examples and nothing stops at the target. Per LR policy, "
                "the seeds of its learning rate (mean ± sd; `tuned` is the LR with the lowest mean final val "
                "loss among those whose every seed finished). The gap is final val loss minus final training "
                "loss of the same weights; ‖θ − θ₀‖ is the distance travelled from the initial weights."
            ),
        ]
        blocks += [Bullets(eb.findings)] if eb.findings else []
        blocks += [Figure(fig["equal_budget"])] if "equal_budget" in fig else []
        blocks += [Table(tab["equal_budget"])] if "equal_budget" in tab else []
    if (cf := curvature_forgetting(a)) is not None:
        items = [f"B={b}: **{v.verdict}**: {v.evidence}." for b, v in sorted(cf.verdicts.items())]
        full = cf.table[cf.table["train_fraction"] == cf.table["train_fraction"].max()]
        inst = [(int(r.batch_size), r.instability_lr) for r in full.itertuples() if r.instability_lr is not None]
        inst = [(b, x) for b, x in inst if np.isfinite(x)]
        if len(inst) >= 2:
            items.append(
                "Instability LR on the largest fraction: "
                + ", ".join(f"{x:.3g} at B={b}" for b, x in inst)
                + " (curvature moves it with the batch size; forgetting does not)."
            )
        blocks += [
            Heading("Curvature or forgetting"),
            Paragraph(
                "LR sweeps on nested subsets of the training set (the same subsets at every batch size and LR). "
                f"Losses are the final {cf.loss_column.removeprefix('final_').replace('_', ' ')} over stable "
                "seeds; an LR is unstable when most of its seeds diverged or ended no lower than their first "
                f"loss. Forgetting-limited: the best LR rises by at least {FORGETTING_RISE} grid steps as the "
                "subset shrinks, never falling. Curvature-limited: the best LR is the same at every fraction "
                f"(within {SAME_STEPS} step) and at most {EDGE_STEPS} steps below an instability LR that is the "
                "same at every fraction. Anything else is undetermined."
            ),
            Bullets(tuple(items)),
        ]
        blocks += [Figure(fig["curvature_forgetting"])] if "curvature_forgetting" in fig else []
        blocks += [Table(tab["curvature_forgetting"])] if "curvature_forgetting" in tab else []
    if "forgetting_probe" in tab:
        blocks += [
            Heading("Forgetting probe"),
            Paragraph(
                "The final weights' loss on the batches trained on last (recent), on batches from the start "
                "of that epoch (early, seen the given number of epochs before the end) and on held-out data. "
                "A model that forgets within an epoch has recent below early, and early back near held-out."
            ),
            Table(tab["forgetting_probe"]),
        ]
    blocks += range_test_section(a, fig, tab)
    blocks += schedules_section(a, fig, tab)
    blocks += branching_section(a, fig, tab)
    return blocks


def schedules_section(a: Analysis, fig: dict[str, FigureFile], tab: dict[str, TableFile]) -> list[Block]:
    sc = a.schedules
    if sc is None:
        return []
    s = a.run.study.get("schedule", {})
    return [
        Heading("LR decay vs batch increase"),
        Paragraph(
            f"The same starting batch size and LR through the same epochs; at each milestone "
            f"({', '.join(f'{m:,.0f}' for m in s.get('milestones', []))} examples) decay_lr divides the LR by "
            f"{s.get('factor', 0):g}, increase_batch multiplies the batch size by it instead, and hybrid grows the "
            "batch to its cap and then decays the LR (Smith, Kindermans, Ying & Le 2017). The noise scale "
            "g ≈ εN/B(1 − m) falls by the same factor each way, so the curves should coincide per epoch while "
            "the batch increase takes fewer updates. Two modes' final values differ when their means are more "
            "than two standard errors of the difference apart. The rest of this report analyses the first mode."
        ),
        Bullets(sc.findings),
        *([Figure(fig["schedules"])] if "schedules" in fig else []),
        *([Table(tab["schedules"])] if "schedules" in tab else []),
    ]


def branching_findings(a: Analysis) -> tuple[str, ...]:
    """One sentence per fact of the branching measurement (empty without one)."""
    br = a.branched
    if br is None:
        return ()
    t = br.table
    cells = [
        f"{r.local_critical_batch:,.0f}{f' (censored {r.censored})' if isinstance(r.censored, str) else ''} "
        f"at {r.examples_seen:,}"
        for r in t.itertuples()
        if r.local_critical_batch is not None and np.isfinite(r.local_critical_batch)
    ]
    out = []
    if cells:
        out.append("Local critical batch size (examples seen by the base run): " + ", ".join(cells) + ".")
    missing = t[t["local_critical_batch"].isna()]
    if len(missing):
        out.append(f"No value at {len(missing)} checkpoint(s): {missing['reason'].iloc[0]}.")
    sweep = float(a.run.curves.groupby("trial_id")["examples_seen"].max().sum())
    if sweep > 0:
        out.append(
            f"Cost: {br.examples:,} examples for the base run and every branch, "
            f"{format_number(100 * br.examples / sweep)}% of the {sweep:,.0f} the sweep trained."
        )
    if a.critical.b_crit is not None:
        out.append(f"The sweep's McCandlish B_crit (to the target): {a.critical.b_crit:,.0f}.")
    return tuple(out)


def branching_section(a: Analysis, fig: dict[str, FigureFile], tab: dict[str, TableFile]) -> list[Block]:
    br = a.branched
    if br is None:
        return []
    s = br.settings
    return [
        Heading("Branched critical batch size"),
        Paragraph(
            f"From checkpoints of one base run at B0 = {s['base_batch']} (LR {s['base_lr']:g}), branches at k·B0 "
            f"with the {s.get('lr_rule', 'linear')} LR rule and a reference (k = 1, the base continued) each train "
            f"{s['window']:,} examples (Merrill et al. 2025). Walking k upwards, a branch keeps up while its final "
            f"{s.get('metric', 'val_loss')} is at most (1 + {s.get('tolerance', 0.02):g}) times that of every "
            "smaller k; the local critical batch size is B0 times the largest k up to which all keep up. It is "
            "local and depends on the base run's LR: McCandlish's B_crit is a property of the whole run to the "
            "target with the LR re-tuned at every batch size. The two measure different things, side by side here."
        ),
        Bullets(branching_findings(a)),
        *([Figure(fig["branching"])] if "branching" in fig else []),
        *([Table(tab["branching"])] if "branching" in tab else []),
    ]


def range_test_section(a: Analysis, fig: dict[str, FigureFile], tab: dict[str, TableFile]) -> list[Block]:
    rt = a.range_test
    if rt is None:
        return []
    spec = a.run.study.get("search", {}).get("lr", {})
    test = spec.get("range_test", {})
    return [
        Heading("LR range test"),
        Paragraph(
            f"Before the sweep, one run per batch size with the LR rising exponentially from {test.get('min', 0):g} "
            f"to {test.get('max', 0):g} over {test.get('steps', 0)} updates (Smith 2015, 2018). The picked LR is the "
            f'one at the minimum of the smoothed training loss divided by {MARGIN:g} (fastai\'s "minimum" rule; '
            'debiased moving average, β = 0.98); Lightning\'s "steepest" rule (the fastest fall against log LR) '
            f"is shown beside it. Each batch size's grid of {spec.get('points', 0)} LRs spans "
            f"±{spec.get('decades', 0):g} decades around its pick."
        ),
        Bullets(rt.findings),
        *([Figure(fig["range_test"])] if "range_test" in fig else []),
        *([Table(tab["range_test"])] if "range_test" in tab else []),
    ]
