"""How numbers leave the analysis: into fits.json (finite or null) and into text.

    from analysis.numbers import finite_or_none
    finite_or_none(float("nan")), finite_or_none(3)      # (None, 3.0)
"""

from __future__ import annotations

import math
from typing import Any


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
