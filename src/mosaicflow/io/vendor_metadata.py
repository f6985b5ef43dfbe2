"""Per-tile metadata of Zeiss SEM TIFFs (tag 34118, ``CZ_SEM``) and FEI/Thermo TEM exports (tag
34683, XML): pixel size, stage position and stored resolution, converted to nanometres.

tifffile parses tag 34118 itself (``tifffile.tifffile.read_cz_sem``) into
``{key: (label, value[, unit])}``; tag 34683 is XML text parsed here with
:func:`mosaicflow.io.safe_xml.parse_xml`. The FEI INI block of tag 34682 is read by
:mod:`mosaicflow.io.images`. ``docs/GRID_FORMAT.md`` describes the fields and units.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

from mosaicflow.errors import TileReadError
from mosaicflow.io.safe_xml import child, iter_named, parse_xml

__all__ = [
    "TEM_TAG",
    "ZEISS_TAG",
    "length_nm",
    "parse_tem_xml",
    "tem_pixel_size_nm",
    "tem_stage_nm",
    "zeiss_from_tag",
    "zeiss_pixel_size_nm",
    "zeiss_stage_nm",
    "zeiss_store_height",
]

TEM_TAG = 34683
ZEISS_TAG = 34118
#: Nanometres per unit; ``u``, the micro sign (U+00B5) and Greek mu (U+03BC) all mean micro.
_NM_PER_UNIT = {
    "pm": 1e-3,
    "a": 0.1,
    "å": 0.1,
    "nm": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "mm": 1e6,
    "cm": 1e7,
    "m": 1e9,
}
_ZEISS = "Zeiss SEM metadata (tag 34118)"
_TEM = "TEM metadata (tag 34683)"
_NUMBER_UNIT = re.compile(r"^\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*([^\s\d].*?)\s*$")
_STORE = re.compile(r"^\s*(\d+)\s*[*xX×]\s*(\d+)\s*$")


def length_nm(value: float, unit: str, *, where: str) -> float:
    """``value`` in ``unit`` (pm, Å, nm, µm/um, mm, cm, m) as nanometres; ``where`` names the tile
    and field in the error."""
    factor = _NM_PER_UNIT.get(unit.strip().lower())
    if factor is None:
        raise TileReadError(f"{where}: unknown length unit {unit!r} (expected nm, µm, mm or m)")
    if not math.isfinite(value):
        raise TileReadError(f"{where}: value is {value}")
    return float(value) * factor


# -- Zeiss (tag 34118) -------------------------------------------------------------------------


def zeiss_from_tag(value: Any, *, source: str) -> dict[str, Any]:
    """The CZ_SEM dictionary tifffile parsed from tag 34118."""
    if isinstance(value, dict):
        return value
    raise TileReadError(
        f"tile {source!r}: {_ZEISS} was not parsed (got {type(value).__name__}); tifffile reads "
        "it as lines 'AP_KEY' then 'Label = value unit'"
    )


def _zeiss_length(meta: dict[str, Any], keys: tuple[str, ...], source: str) -> float | None:
    """The first of ``keys`` as a length in nm, None when none is there."""
    key = next((k for k in keys if k in meta), None)
    if key is None:
        return None
    item = meta[key]
    where = f"tile {source!r}: {_ZEISS} {key.upper()}={item!r}"
    parts = tuple(item) if isinstance(item, tuple | list) else (key, item)
    if len(parts) >= 3 and isinstance(parts[1], int | float) and not isinstance(parts[1], bool):
        return length_nm(float(parts[1]), str(parts[2]), where=where)
    # tifffile leaves "2.5nm" (no space) or "1.0 µ m" as text: read number and unit here
    match = _NUMBER_UNIT.match(str(parts[1]) if len(parts) > 1 else "")
    if match is None:
        raise TileReadError(f"{where}: not a length with a unit (e.g. '2.5 nm')")
    try:
        number = float(match.group(1))
    except ValueError:
        raise TileReadError(f"{where}: not a length with a unit (e.g. '2.5 nm')") from None
    return length_nm(number, match.group(2), where=where)


def zeiss_pixel_size_nm(meta: dict[str, Any], *, source: str) -> tuple[float, float] | None:
    """``(y, x)`` pixel size from ``AP_IMAGE_PIXEL_SIZE`` (or ``AP_PIXEL_SIZE``), square."""
    size = _zeiss_length(meta, ("ap_image_pixel_size", "ap_pixel_size"), source)
    return None if size is None else (size, size)


def zeiss_stage_nm(meta: dict[str, Any], *, source: str) -> tuple[float, float] | None:
    """``(y, x)`` stage position in nm from ``AP_STAGE_AT_Y``/``AP_STAGE_AT_X`` (None when both
    are absent; one without the other is an error)."""
    x = _zeiss_length(meta, ("ap_stage_at_x",), source)
    y = _zeiss_length(meta, ("ap_stage_at_y",), source)
    if x is None and y is None:
        return None
    if x is None or y is None:
        lacking = "AP_STAGE_AT_X" if x is None else "AP_STAGE_AT_Y"
        raise TileReadError(f"tile {source!r}: {_ZEISS} has a stage position without {lacking}")
    return y, x


def zeiss_store_height(meta: dict[str, Any], *, source: str) -> int:
    """Image height without the data bar, from ``DP_IMAGE_STORE`` (``'1024 * 768'``, width *
    height); 0 when absent."""
    key = next((k for k in ("dp_image_store", "dp_store_resolution") if k in meta), None)
    if key is None:
        return 0
    item = meta[key]
    text = str(item[1]) if isinstance(item, tuple | list) and len(item) > 1 else str(item)
    match = _STORE.match(text)
    if match is None:
        raise TileReadError(
            f"tile {source!r}: {_ZEISS} {key.upper()}={text!r} is not 'WIDTH * HEIGHT'"
        )
    return int(match.group(2))


# -- FEI/Thermo TEM (tag 34683) ----------------------------------------------------------------

#: Field name -> (text, unit) of the values read from the TEM XML.
TemFields = dict[str, tuple[str, str]]


def _value(element: ET.Element | None, unit: str) -> tuple[str, str] | None:
    if element is None:
        return None
    attr = next((v for k, v in element.attrib.items() if k.lower() == "unit"), None)
    return (element.text or "").strip(), (attr or unit).strip() or "m"


def parse_tem_xml(value: Any, *, source: str) -> TemFields:
    """Pixel size and stage position texts of an FEI/Thermo TEM XML block (tag 34683).

    ``BinaryResult/PixelSize/Width`` and ``Height`` (or ``X``/``Y``), in metres unless a
    ``unit`` attribute or ``BinaryResult/PixelUnitX``/``PixelUnitY`` says otherwise;
    ``Stage/Position/X`` and ``Y`` (or ``StageSettings/StagePosition``), in metres. Tag names
    are matched without namespace and case.
    """
    data = value if isinstance(value, str | bytes) else bytes(value)
    root = parse_xml(data, where=f"tile {source!r}: {_TEM}")
    fields: TemFields = {}
    results = [r for r in iter_named(root, "binaryresult") if child(r, "pixelsize") is not None]
    holder = results[0] if results else None
    size = child(holder, "pixelsize") if holder is not None else None
    if size is None:
        size = next(iter_named(root, "pixelsize"), None)
    if size is not None:
        for name, aliases, unit_key in (
            ("Width", ("width", "x"), "pixelunitx"),
            ("Height", ("height", "y"), "pixelunity"),
        ):
            unit_el = child(holder, unit_key) if holder is not None else None
            unit = (unit_el.text or "").strip() if unit_el is not None else "m"
            found = _value(child(size, *aliases), unit)
            if found is not None:
                fields[f"PixelSize/{name}"] = found
    position = None
    for stage in iter_named(root, "stage", "stagesettings"):
        position = child(stage, "position", "stageposition")
        if position is not None:
            break
    if position is None:
        position = next(iter_named(root, "stageposition"), None)
    if position is not None:
        for axis in ("X", "Y"):
            found = _value(child(position, axis.lower()), "m")
            if found is not None:
                fields[f"Stage/Position/{axis}"] = found
    return fields


def _tem_nm(fields: TemFields, key: str, source: str) -> float | None:
    if key not in fields:
        return None
    text, unit = fields[key]
    where = f"tile {source!r}: {_TEM} {key}={text!r}"
    try:
        number = float(text)
    except ValueError:
        raise TileReadError(f"{where} is not a number") from None
    return length_nm(number, unit, where=where)


def tem_pixel_size_nm(fields: TemFields, *, source: str) -> tuple[float, float] | None:
    """``(y, x)`` pixel size in nm; ``Height`` defaults to ``Width`` (square pixels)."""
    width = _tem_nm(fields, "PixelSize/Width", source)
    height = _tem_nm(fields, "PixelSize/Height", source)
    if width is None and height is None:
        return None
    if width is None:
        raise TileReadError(f"tile {source!r}: {_TEM} has PixelSize/Height but no Width")
    return (width if height is None else height), width


def tem_stage_nm(fields: TemFields, *, source: str) -> tuple[float, float] | None:
    """``(y, x)`` stage position in nm (None when absent; one axis alone is an error)."""
    x = _tem_nm(fields, "Stage/Position/X", source)
    y = _tem_nm(fields, "Stage/Position/Y", source)
    if x is None and y is None:
        return None
    if x is None or y is None:
        lacking = "Stage/Position/X" if x is None else "Stage/Position/Y"
        raise TileReadError(f"tile {source!r}: {_TEM} has a stage position without {lacking}")
    return y, x
