"""Parsing and comparing configuration values: grid sizes, overlaps, particle sizes, and the
differences between two configurations."""

from __future__ import annotations

import re
from typing import Any

from mosaicflow.errors import ConfigError


def parse_grid(text: str, what: str = "tiles.grid") -> tuple[int, int]:
    """``"3x4"`` -> ``(3, 4)`` (rows, cols).

    Raises
    ------
    ConfigError
        Anything but two positive integers joined by ``x``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if match is None or min(int(match.group(1)), int(match.group(2))) < 1:
        raise ConfigError(f"{what}: expected ROWSxCOLS such as '3x4', got {text!r}")
    return int(match.group(1)), int(match.group(2))


def parse_overlap(value: Any, what: str = "tiles.overlap") -> tuple[float, float] | None:
    """``0.1`` or ``"0.1"`` -> ``(0.1, 0.1)``; ``"0.1,0.25"`` -> ``(0.1, 0.25)`` (vertical,
    horizontal: the fraction of a tile's height shared with the tile below, of its width with
    the tile to the right); ``None`` stays ``None``.

    Raises
    ------
    ConfigError
        Not one or two numbers in [0, 1).
    """
    if value is None:
        return None
    parts = [value] if isinstance(value, (int, float)) else str(value).split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(0 <= v < 1 for v in numbers):
        raise ConfigError(
            f"{what}: expected a fraction in [0, 1) or VERTICAL,HORIZONTAL such as '0.1,0.25', "
            f"got {value!r}"
        )
    return (numbers[0], numbers[-1])


def parse_size(text: str, what: str = "measure.min_size") -> tuple[float, str] | None:
    """``"12 nm"``, ``"3px"``, ``"0"`` -> ``(12.0, "nm")``, ``(3.0, "px")``, ``(0.0, "px")``;
    ``"auto"`` -> ``None``.

    Raises
    ------
    ConfigError
        Anything else, with the accepted forms.
    """
    value = str(text).strip().lower()
    if value == "auto":
        return None
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(nm|px)?", value)
    if match is None or (match.group(2) is None and float(match.group(1)) != 0):
        raise ConfigError(
            f"{what}: expected 'auto', '0' or a size such as '12 nm' or '3 px', got {text!r}"
        )
    return float(match.group(1)), match.group(2) or "px"


def config_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``section.key: old -> new`` for every value of ``current`` (a :meth:`Config.to_dict`)
    that differs from ``stored``; the ``cluster`` section is not compared."""
    diffs = []
    for section, values in current.items():
        if section in ("cluster",):
            continue
        old = stored.get(section)
        if isinstance(values, dict) and isinstance(old, dict):
            diffs += [
                f"{section}.{k}: {old.get(k)!r} -> {v!r}"
                for k, v in values.items()
                if old.get(k) != v
            ]
        elif old != values:
            diffs.append(f"{section}: {old!r} -> {values!r}")
    return diffs
