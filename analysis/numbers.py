"""How numbers leave the analysis: into fits.json (finite or null) and into text.

``format_number`` is the one way the report writes an estimate: in the summary, the
tables, the figures' legends and their tick labels. The study's target value is the
exception: it is the user's own number, shown as given (``:g``).

    from analysis.numbers import finite_or_none, format_interval, format_number
    finite_or_none(float("nan")), finite_or_none(3)          # (None, 3.0)
    format_number(0.012345), format_number(256.4)             # ('0.0123', '256')
    format_number(840000.0), format_number(1024)              # ('840,000', '1024')
    format_interval((180.2, None)), format_interval(None)     # ('[180, n/a]', 'n/a')
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# An empty table cell reads better as a dash than as prose's "n/a".
MISSING_CELL = "–"

# Whole numbers are clearest from 100 up; past 1e7 their digits are noise to a reader.
WHOLE_FROM = 100.0
SCIENTIFIC_FROM = 1e7
SCIENTIFIC_BELOW = 1e-3


def finite_or_none(x: Any) -> float | None:
    """``x`` as a float, or None where it is None, not a number, NaN or infinite.

    fits.json writes null for what cannot be estimated and never NaN (strict JSON has none).
    """
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def format_number(x: Any, digits: int = 3, missing: str = "n/a", grouping: bool = True) -> str:
    """``x`` for a reader: ``digits`` significant digits, whole from 100 to 1e7.

    Integers (counts, batch sizes: exact identifiers) are written as they are and booleans
    as yes/no; values below 1e-3 or from 1e7 up in ``digits``-digit scientific form;
    ``missing`` stands for None, NaN and infinity. ``grouping`` separates thousands in the
    whole numbers; tick labels turn it off, having no room for it.
    """
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    v = finite_or_none(x)
    if v is None:
        return missing
    if abs(v) >= SCIENTIFIC_FROM or (v != 0 and abs(v) < SCIENTIFIC_BELOW):
        return f"{v:.{digits}g}"
    if abs(v) >= WHOLE_FROM:
        return f"{v:,.0f}" if grouping else f"{v:.0f}"
    return f"{v:.{digits}g}"


def format_interval(ci: tuple[Any, Any] | None, missing: str = "n/a", grouping: bool = True) -> str:
    """``[low, high]`` in ``format_number``'s form; ``missing`` for an absent end, or alone
    when there is no interval at all."""
    if ci is None or (finite_or_none(ci[0]) is None and finite_or_none(ci[1]) is None):
        return missing
    lo, hi = (format_number(v, missing=missing, grouping=grouping) for v in ci)
    return f"[{lo}, {hi}]"
