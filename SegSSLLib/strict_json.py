"""JSON that every reader accepts: NaN and infinity become null instead of invalid tokens.

``json.dumps`` writes ``NaN``/``Infinity`` by default, which strict parsers (JavaScript, jq, Qt)
reject; a metric or a loss that is not finite has no value, so it is written as null.
"""

from __future__ import annotations

import json
import math
import numbers


def finite_or_none(value):
    """``value`` with every non-finite real number, at any depth in dicts/lists/tuples, replaced by None."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return float(value) if math.isfinite(value) else None
    return value


def dumps(value, **kwargs) -> str:
    """``json.dumps`` with non-finite numbers as null; ``allow_nan=False`` makes any miss an error."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
