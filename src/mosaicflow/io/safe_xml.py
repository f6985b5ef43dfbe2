"""Vendor XML read safely and tolerantly: documents declaring a DTD or entities are refused
before anything is expanded, tag names are compared without namespace and case.

``defusedxml`` is not a dependency, so the document is first scanned with the standard
library's expat parser, which reports a ``<!DOCTYPE`` or ``<!ENTITY`` declaration (in any
encoding, UTF-16 included) before any entity is expanded; only then is it parsed with
:mod:`xml.etree.ElementTree`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from xml.parsers import expat

from mosaicflow.errors import TileReadError

__all__ = ["child", "child_text", "iter_named", "local_name", "parse_xml"]


class _Declared(Exception):
    """A DTD or entity declaration met while scanning."""


def _refuse(*_args: object) -> None:
    raise _Declared


def parse_xml(data: bytes | str, *, where: str) -> ET.Element:
    """The root element of an XML document, refusing DTD and entity declarations.

    Parameters
    ----------
    data : bytes or str
        The document (bytes keep their declared encoding).
    where : str
        What the document is, for error messages (``"tile 'a.tif': TEM metadata (tag 34683)"``).

    Raises
    ------
    TileReadError
        The document declares a DTD or entities (refused, never expanded), or is not
        well-formed XML.
    """
    scanner = expat.ParserCreate()
    scanner.StartDoctypeDeclHandler = _refuse
    scanner.EntityDeclHandler = _refuse
    try:
        scanner.Parse(data, True)
    except _Declared:
        raise TileReadError(
            f"{where}: refused: the XML declares a DTD or entities (<!DOCTYPE>/<!ENTITY>), "
            "which are never expanded (they can expand without bound)"
        ) from None
    except (expat.ExpatError, ValueError) as exc:
        raise TileReadError(f"{where}: malformed XML ({exc})") from None
    return ET.fromstring(data)


def local_name(element: ET.Element) -> str:
    """The tag without its namespace, lower case (``{ns}PixelSize`` -> ``pixelsize``)."""
    tag = element.tag if isinstance(element.tag, str) else ""
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()


def child(element: ET.Element, *names: str) -> ET.Element | None:
    """The first direct child whose local name is one of ``names`` (lower case)."""
    for item in element:
        if local_name(item) in names:
            return item
    return None


def child_text(element: ET.Element, *names: str) -> str | None:
    """The stripped text of the first direct child named one of ``names``, or of an attribute
    of that name (case-insensitive); None when neither is there."""
    found = child(element, *names)
    if found is not None:
        return (found.text or "").strip()
    for key, value in element.attrib.items():
        if key.rsplit("}", 1)[-1].lower() in names:
            return value.strip()
    return None


def iter_named(element: ET.Element, *names: str) -> Iterator[ET.Element]:
    """Every element of the tree (``element`` included) whose local name is one of ``names``,
    in document order."""
    for item in element.iter():
        if local_name(item) in names:
            yield item
