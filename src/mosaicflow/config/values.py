"""Parsing and comparing configuration values: grid sizes, overlaps, particle sizes, and the
differences between two configurations."""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
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
    that differs from ``stored``; the ``cluster`` and ``storage`` sections (where the work runs,
    how storage is reached) are not compared, and the paths of
    :data:`PATH_KEYS` are compared resolved (:func:`same_input`): the same folder given
    relatively or with a trailing slash is the same input."""
    diffs = []
    for section, values in current.items():
        if section in ("cluster", "storage"):
            continue
        old = stored.get(section)
        if isinstance(values, dict) and isinstance(old, dict):
            diffs += [
                f"{section}.{k}: {old.get(k)!r} -> {v!r}"
                for k, v in values.items()
                if not _same_value(f"{section}.{k}", old.get(k), v)
            ]
        elif not _same_value(section, old, values):
            diffs.append(f"{section}: {old!r} -> {values!r}")
    return diffs


def _same_value(what: str, old: Any, new: Any) -> bool:
    if (
        what in PATH_KEYS
        and isinstance(old, (str, type(None)))
        and isinstance(new, (str, type(None)))
    ):
        return same_input(old, new)
    return bool(old == new)


# -- typed values -----------------------------------------------------------------------------
#: The smallest worker memory limit taken as meant: a bare "4" is 4 bytes, never enough.
MIN_MEMORY_LIMIT_BYTES = 2**26
_TRUE_FALSE = {"true": True, "false": False}


def coerce_value(what: str, annotation: Any, value: Any) -> Any:
    """``value`` as the type ``annotation`` names (a dataclass field's type, as text).

    Strings, as environment variables give them, are parsed (``"512"`` -> 512, ``"true"`` ->
    True); otherwise a value must already have the type: an integer stays an integer (a float
    is accepted only with an integral value, ``512.0`` -> 512; ``512.9`` is refused), a boolean
    is ``true`` or ``false`` (``'no'`` or ``1`` is refused), a float is any finite number but a
    boolean, a text is a string (numbers are written out: ``overlap: 0.1`` -> ``"0.1"``), and a
    ``dict[str, float]`` maps names to finite numbers >= 0.

    Parameters
    ----------
    what : str
        The option's name, ``section.key``, for the messages.
    annotation : str or type
        The field's type, e.g. ``"int"``, ``"float | None"``, ``"dict[str, float] | None"``.
    value : object
        The value given.

    Returns
    -------
    object
        The value with its type.

    Raises
    ------
    ConfigError
        A value of another type, naming ``what`` and the value.
    """
    parts = [p.strip() for p in str(annotation).split("|")]
    if value is None:
        if "None" in parts:
            return None
        raise ConfigError(f"{what} may not be empty")
    base = parts[0]
    if base == "bool":
        if isinstance(value, str) and value.strip().lower() in _TRUE_FALSE:
            return _TRUE_FALSE[value.strip().lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"{what}: expected true or false, got {value!r}")
        return value
    if base == "int":
        return _integer(what, value)
    if base == "float":
        return _finite(what, value)
    if base == "str":
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{what}: expected str (a text), got {value!r}")
        return str(value)
    if base == "dict[str, Any]":
        return check_storage_options(what, value)
    if base.startswith("dict"):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{what}: expected a mapping of names to numbers, got {value!r}")
        out = {k: _finite(f"{what}.{k}", v) for k, v in value.items()}
        negative = {k: v for k, v in out.items() if v < 0}
        if negative:
            raise ConfigError(f"{what}: amounts must be >= 0, got {negative!r}")
        return out
    return value


def _integer(what: str, value: Any) -> int:
    """An integer from an int, an integral float or a text of one; anything else refused."""
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = None
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise ConfigError(f"{what}: expected int (a whole number), got {value!r}")
    if isinstance(number, numbers.Integral):
        return int(number)
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(
            f"{what}: expected int (a whole number), got {value!r}; it is not rounded silently"
        )
    return int(number)


def _finite(what: str, value: Any) -> float:
    """A finite float from a number (not a boolean) or a text of one."""
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, numbers.Real):
        raise ConfigError(f"{what}: expected float (a number), got {value!r}")
    if not math.isfinite(float(number)):
        raise ConfigError(f"{what}: expected a finite number, got {value!r}")
    return float(number)


def parse_memory_limit(value: Any, what: str = "cluster.memory_limit") -> str:
    """Check a worker memory limit as ``distributed`` reads it, before any cluster starts.

    Accepted: ``"auto"`` (the machine's memory shared between the workers), a byte size
    (``"4GiB"``, ``"4 GB"``, ``"500MB"``: ``dask.utils.parse_bytes``), a whole number of bytes,
    a fraction in (0, 1] of the machine's memory (``0.5``), or ``0`` for no limit.

    Parameters
    ----------
    value : str, int or float
        The configured limit.
    what : str
        The option's name, for the messages.

    Returns
    -------
    str
        The limit as text, in a form ``distributed.LocalCluster(memory_limit=...)`` reads the
        same way.

    Raises
    ------
    ConfigError
        Anything else (``"lots"``, a negative or non-finite number, a size below 64 MiB, which
        is taken for a forgotten unit), naming ``what`` and the value.
    """
    from dask.utils import parse_bytes

    accepted = (
        "expected 'auto', a size such as '4GiB' or '4 GB', a whole number of bytes, a fraction "
        "in (0, 1] of the machine's memory, or 0 for no limit"
    )
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{what}: {accepted}, got {value!r}")
    text = str(value).strip()
    if text.lower() == "auto":
        return "auto"
    try:
        number = float(text)
    except ValueError:
        try:
            number = float(parse_bytes(text))
        except (ValueError, TypeError):
            raise ConfigError(f"{what}: {accepted}, got {value!r}") from None
    else:
        if 0 < number <= 1 or number == 0:
            return text
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(f"{what}: {accepted}, got {value!r}")
    if number < 0:
        raise ConfigError(f"{what}: {accepted}, got {value!r} (negative)")
    if 0 < number < MIN_MEMORY_LIMIT_BYTES:
        raise ConfigError(
            f"{what}: {value!r} is only {int(number)} bytes per worker (less than 64 MiB); give "
            "a unit, such as '4GB'"
        )
    return text


# -- input paths ----------------------------------------------------------------------------
#: Configuration values that name local files or folders, compared as resolved paths.
PATH_KEYS = ("input", "tiles.layout", "segment.model", "classify.model")


def same_input(a: str | os.PathLike[str] | None, b: str | os.PathLike[str] | None) -> bool:
    """Whether two configured input paths name the same file or folder.

    Local paths are compared resolved (``~`` expanded, relative to the working directory,
    symbolic links followed, a trailing slash ignored); URLs (``s3://...``) and ``None`` are
    compared as text, less a trailing slash.

    Parameters
    ----------
    a, b : str, path or None
        The stored and the current value.

    Returns
    -------
    bool
    """
    if a is None or b is None:
        return a is None and b is None
    ta, tb = os.fspath(a), os.fspath(b)
    if "://" in ta or "://" in tb:
        return ta.rstrip("/") == tb.rstrip("/")
    return Path(ta).expanduser().resolve() == Path(tb).expanduser().resolve()


# -- storage options ------------------------------------------------------------------------
#: Option names holding credentials: never printed, never stored (matched anywhere in the
#: name, case-insensitively: ``key``, ``secret``, ``aws_session_token``, ``password``).
SECRET_NAMES = re.compile(r"key|secret|token|password|passwd|credential", re.IGNORECASE)
REDACTED = "***"
_SCALARS = (str, int, float, bool, type(None))


def check_storage_options(what: str, value: Any) -> dict[str, Any]:
    """Check fsspec storage options: a mapping of names to scalars or nested mappings.

    Parameters
    ----------
    what : str
        The option's name (``storage.options``), for the messages.
    value : object
        The value given.

    Returns
    -------
    dict
        A plain copy (nested mappings copied too).

    Raises
    ------
    ConfigError
        Not such a mapping; the message names the offending key and its type, never a value.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{what}: expected a mapping of fsspec storage options, got {type(value).__name__}"
        )
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{what}: option names must be non-empty texts, got {key!r}")
        if isinstance(item, Mapping):
            out[key] = check_storage_options(f"{what}.{key}", item)
        elif isinstance(item, _SCALARS) and not (
            isinstance(item, float) and not math.isfinite(item)
        ):
            out[key] = item
        else:
            raise ConfigError(
                f"{what}.{key}: expected a text, number, boolean or mapping, got "
                f"{type(item).__name__}"
            )
    return out


def parse_storage_option(text: str) -> tuple[list[str], Any]:
    """``"KEY=VALUE"`` -> ``([key, ...], value)``: a dotted key names a nested option
    (``client_kwargs.region_name``); the value is read as a YAML scalar (``anon=true`` is a
    boolean, ``max_concurrency=4`` an integer, anything else a text), except that a credential
    (:data:`SECRET_NAMES`) is always kept as written.

    Raises
    ------
    ConfigError
        No ``=``, an empty key part, or a value that is not a scalar; the message never shows
        the value (it may be a secret).
    """
    import yaml

    key, sep, raw = str(text).partition("=")
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise ConfigError(
            f"--storage-option: expected KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000, "
            f"client_kwargs.region_name=us-east-1), got an option named {key.strip()!r}"
        )
    if SECRET_NAMES.search(parts[-1]) or not raw.strip():
        return parts, raw  # a secret of digits stays a text
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    if not isinstance(value, _SCALARS):
        value = raw  # a text such as "[a" or "{x}" is taken as written
    return parts, value


def storage_options_from_args(
    items: list[str] | None, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``base`` (the configuration's options) with each ``--storage-option KEY=VALUE`` set,
    later ones winning; nested mappings are merged key by key."""
    out = check_storage_options("storage.options", base or {})
    for text in items or []:
        parts, value = parse_storage_option(text)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = value
    return out


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of storage options with every credential (:data:`SECRET_NAMES`) replaced by
    ``"***"``, at any depth: what may be printed or stored."""
    return {
        k: (
            redact_options(v)
            if isinstance(v, Mapping)
            else (REDACTED if SECRET_NAMES.search(str(k)) and v is not None else v)
        )
        for k, v in options.items()
    }
