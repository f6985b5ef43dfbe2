"""One tile image of any common format: its header (size, type, FEI/Thermo metadata) without
decoding pixels, and its pixels as a grey 2-D array with the data bar cropped.

TIFF is read with tifffile (the FEI/Thermo INI block of tag 34682, the FEI/Thermo TEM XML of tag
34683 and Zeiss ``CZ_SEM`` tag 34118 included; :mod:`mosaicflow.io.vendor_metadata` reads the
last two); PNG, JPEG and BMP with Pillow. Colour tiles become grey by luminance,
``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, the weights Pillow's ``"L"`` mode uses), rounded
back to the tile's integer type; an alpha channel is dropped.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from mosaicflow.errors import TileReadError
from mosaicflow.io.remote import RemotePath, access_error, as_path
from mosaicflow.io.vendor_metadata import TEM_TAG, ZEISS_TAG, parse_tem_xml, zeiss_from_tag

FEI_TAG = 34682
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp")
LUMINANCE = (0.299, 0.587, 0.114)


def is_image(path: Path) -> bool:
    """Whether a file name has one of the image suffixes read here."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def parse_fei_metadata(text: str, *, source: str) -> dict[str, dict[str, str]]:
    """Parse the FEI/Thermo INI block of TIFF tag 34682 into ``{section: {key: value}}``."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text.strip("\x00"))
    except configparser.Error as exc:
        raise TileReadError(f"tile {source!r}: unreadable FEI metadata (tag 34682): {exc}") from exc
    return {s: dict(parser[s]) for s in parser.sections()}


def metadata_float(meta: dict[str, dict[str, str]], section: str, key: str, source: str) -> float:
    """One number of the FEI metadata; errors name the tile and the key."""
    try:
        value = float(meta[section][key])
    except KeyError:
        raise TileReadError(
            f"tile {source!r}: FEI metadata (tag 34682) has no [{section}] {key}"
        ) from None
    except ValueError:
        raise TileReadError(
            f"tile {source!r}: FEI metadata [{section}] {key}={meta[section][key]!r} "
            "is not a number"
        ) from None
    if not np.isfinite(value):
        raise TileReadError(f"tile {source!r}: FEI metadata [{section}] {key} is {value}")
    return value


def check_complete(tif: tifffile.TiffFile, path: Path) -> None:
    """Refuse a TIFF whose first page's image data runs past the end of the file."""
    # A remote file's size is known from its open handle: no further request.
    size = tif.filehandle.size if isinstance(path, RemotePath) else path.stat().st_size
    page = tif.pages.first
    end = max(
        (int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=True)),
        default=0,
    )
    if end > size:
        raise TileReadError(
            f"tile {path.name!r}: truncated TIFF (file is {size} bytes, its image data "
            f"needs {end} bytes)"
        )


def _grey_shape(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if len(shape) == 3 and shape[2] in (2, 3, 4):
        return int(shape[0]), int(shape[1])
    raise TileReadError(
        f"tile {path.name!r}: expected a 2-D greyscale or RGB image, got shape {shape}"
    )


def _fei_from_tag(value: Any, path: Path) -> dict[str, dict[str, str]] | None:
    if value is None:
        return None
    if isinstance(value, dict):  # tifffile already parsed the INI block
        return {
            str(k): {str(a): str(b) for a, b in v.items()}
            for k, v in value.items()
            if isinstance(v, dict)
        }
    text = value if isinstance(value, str) else bytes(value).decode("latin-1")
    return parse_fei_metadata(text, source=path.name)


#: Pillow modes and the grey pixel type they decode to.
_PIL_DTYPES = {
    "1": "uint8",
    "L": "uint8",
    "LA": "uint8",
    "P": "uint8",
    "RGB": "uint8",
    "RGBA": "uint8",
    "CMYK": "uint8",
    "YCbCr": "uint8",
    "I;16": "uint16",
    "I;16B": "uint16",
    "I;16L": "uint16",
    "I": "int32",
    "F": "float32",
}


#: Bytes fetched per request when a remote TIFF is read piece by piece (headers, windows).
REMOTE_BLOCK = 2**18


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Any]:
    """What tifffile or Pillow opens: a local path itself, or an open file object at a URL
    (read in :data:`REMOTE_BLOCK` pieces, so a header read fetches little of the file)."""
    if isinstance(path, RemotePath):
        with path.open("rb", block_size=REMOTE_BLOCK) as fh:
            yield fh
    else:
        yield path


def remote_error(exc: BaseException, path: Path) -> TileReadError | None:
    """The storage's refusal to read a remote tile (credentials, endpoint), named clearly."""
    if not isinstance(path, RemotePath):
        return None
    found = access_error(exc, str.__str__(path), "tile", TileReadError)
    return found if isinstance(found, TileReadError) else None


@contextlib.contextmanager
def tile_errors(path: Path, what: str) -> Iterator[None]:
    """Turn any failure of reading ``path`` into a :class:`TileReadError` naming the tile: file
    not found, the storage's refusal (remote tiles), else ``what`` with the cause."""
    try:
        yield
    except TileReadError:
        raise
    except FileNotFoundError:
        raise TileReadError(f"tile {path.name!r}: file not found at {path}") from None
    except Exception as exc:
        if (refused := remote_error(exc, path)) is not None:
            raise refused from None
        raise TileReadError(f"tile {path.name!r}: {what} ({exc})") from exc


def _tag_value(page: Any, code: int) -> Any:
    tag = page.tags.get(code)
    return None if tag is None else tag.value


def read_image_header(path: Path) -> dict[str, Any]:
    """Shape ``(height, width)`` as stored, grey dtype and vendor metadata of one image (a
    local path, or a :class:`~mosaicflow.io.remote.RemotePath` read through a file object).

    Pixels are not decoded; a TIFF is checked for truncation against its strip offsets, any
    other format for a readable header.

    Returns
    -------
    dict
        ``shape``, ``dtype``; ``fei`` (the INI block of tag 34682 as ``{section: {key:
        value}}``), ``tem`` (the fields of tag 34683's XML, read only without tag 34682) and
        ``zeiss`` (tag 34118 as tifffile parses it), each None where the tag is absent.
    """
    tem = zeiss = None
    kind = "TIFF" if path.suffix.lower() in TIFF_SUFFIXES else "image"
    with tile_errors(path, f"not a readable {kind}"):
        if path.suffix.lower() in TIFF_SUFFIXES:
            with opened(path) as source, tifffile.TiffFile(source) as tif:
                page = tif.pages.first
                shape = tuple(int(s) for s in page.shape)
                dtype = np.dtype(page.dtype)
                value = _tag_value(page, FEI_TAG)
                tem = _tag_value(page, TEM_TAG) if value is None else None
                zeiss = _tag_value(page, ZEISS_TAG)
                check_complete(tif, path)
        else:
            from PIL import Image

            with opened(path) as source, Image.open(source) as img:
                mode = img.mode
                shape = (img.height, img.width)
            if mode not in _PIL_DTYPES:
                raise TileReadError(f"tile {path.name!r}: unsupported image mode {mode!r}")
            dtype = np.dtype(_PIL_DTYPES[mode])
            value = None
    return {
        "shape": _grey_shape(shape, path),
        "dtype": dtype,
        "fei": _fei_from_tag(value, path),
        "tem": None if tem is None else parse_tem_xml(tem, source=path.name),
        "zeiss": None if zeiss is None else zeiss_from_tag(zeiss, source=path.name),
    }


def to_grey(data: np.ndarray) -> np.ndarray:
    """A 2-D grey image: luminance of RGB(A), the first channel of grey+alpha; same dtype."""
    if data.ndim == 2:
        return data
    if data.shape[2] == 2:
        return np.ascontiguousarray(data[..., 0])
    grey = data[..., :3].astype(np.float64) @ np.asarray(LUMINANCE)
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        grey = np.clip(np.rint(grey), info.min, info.max)
    return grey.astype(data.dtype)


def _decode(path: Path) -> np.ndarray:
    # A remote tile is fetched whole in one request, then decoded from memory.
    source: Any = io.BytesIO(path.read_bytes()) if isinstance(path, RemotePath) else path
    if path.suffix.lower() in TIFF_SUFFIXES:
        return np.asarray(tifffile.imread(source, key=0))
    from PIL import Image

    with Image.open(source) as img:
        if img.mode in ("P", "CMYK", "YCbCr"):
            return np.asarray(img.convert("RGB"))
        if img.mode == "1":
            return np.asarray(img.convert("L"))
        return np.asarray(img)


def read_tile(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int],
    dtype: Any,
    crop_bottom: int = 0,
    storage_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Decode one tile's pixels as grey, crop ``crop_bottom`` rows (the data bar) and check its
    size ``shape`` (after the crop) and type; errors name the tile.

    ``path`` is a local path or an fsspec URL (``s3://...``); ``storage_options`` (endpoint,
    credentials) open a URL, by default those its :class:`~mosaicflow.io.remote.RemotePath`
    carries."""
    path = as_path(path, storage_options)
    with tile_errors(path, "cannot decode pixels"):
        data = to_grey(_decode(path))
    stored = (int(shape[0]) + int(crop_bottom), int(shape[1]))
    if data.shape != stored:
        raise TileReadError(f"tile {path.name!r}: size {data.shape}, expected {stored}")
    if data.dtype != np.dtype(dtype):
        raise TileReadError(f"tile {path.name!r}: pixel type {data.dtype}, expected {dtype}")
    return data[: int(shape[0])] if crop_bottom else data
