"""Parameter validators shared by every stage: each error names the function and the parameter."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from mosaicflow.errors import ConfigError


def positive_number(value: Any, what: str, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or a ConfigError naming the parameter."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{what}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def odd_int(value: Any, what: str, name: str, *, minimum: int = 1) -> int:
    """``value`` as an odd int >= ``minimum``, or a ConfigError naming the parameter."""
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < minimum
        or value % 2 == 0
    ):
        raise ConfigError(f"{what}: {name} must be an odd integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(value: Any, what: str, name: str, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a ConfigError naming the parameter."""
    if value not in choices:
        raise ConfigError(f"{what}: {name} must be one of {list(choices)}, got {value!r}")
    return value
