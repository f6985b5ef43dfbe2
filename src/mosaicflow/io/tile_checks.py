"""Tiles whose pixels cannot make a mosaic (unreadable, NaN or infinite pixels, blank), found
by one Dask task per tile before the heavy stages, so the error names them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np

from mosaicflow._shared.batches import batches
from mosaicflow.errors import TileReadError
from mosaicflow.io.images import read_tile

if TYPE_CHECKING:
    from dask.delayed import Delayed

    from mosaicflow.io.tiles import TileSet

__all__ = ["TileProblem", "check_tile_pixels", "raise_for_tile_problems"]

#: Problems named one by one in the error; the rest are counted.
SHOWN = 5
#: Tiles read and checked by one Dask task (a 1400x900 tile takes about a millisecond; see
#: :mod:`mosaicflow._shared.batches`).
TILES_PER_TASK = 8


@dataclass(frozen=True)
class TileProblem:
    """Why one tile cannot be used.

    Attributes
    ----------
    file : str
        The tile's file name.
    row, col : int
        Its grid position (1-based).
    kind : str
        ``unreadable`` (the pixels cannot be decoded, or are of another size or type than the
        headers said), ``non-finite`` (NaN or infinite pixels) or ``blank`` (every pixel the
        same value).
    detail : str
        What was found, e.g. ``"every pixel is 0"``.
    """

    file: str
    row: int
    col: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"tile {self.file!r} (row {self.row}, col {self.col}): {self.kind}: {self.detail}"


def _check_tile(
    path: str, row: int, col: int, shape: tuple[int, int], dtype: str, crop_bottom: int
) -> TileProblem | None:
    """The task: read one tile, return its problem or None."""
    name = Path(path).name
    try:
        data = read_tile(path, shape=shape, dtype=dtype, crop_bottom=crop_bottom)
    except TileReadError as exc:
        return TileProblem(name, row, col, "unreadable", str(exc))
    if data.dtype.kind in "fc":
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        if bad:
            return TileProblem(
                name, row, col, "non-finite", f"{bad} of {data.size} pixels are NaN or infinite"
            )
    lo, hi = data.min(), data.max()
    if lo == hi:
        return TileProblem(name, row, col, "blank", f"every pixel is {lo.item()!r}")
    return None


def _check_tiles(
    tiles: list[tuple[str, int, int]], shape: tuple[int, int], dtype: str, crop_bottom: int
) -> list[TileProblem | None]:
    """The task: :func:`_check_tile` for each ``(path, row, col)`` of its tiles, in turn."""
    return [_check_tile(path, row, col, shape, dtype, crop_bottom) for path, row, col in tiles]


def _found(*results: list[TileProblem | None]) -> list[TileProblem]:
    return [r for batch in results for r in batch if r is not None]


def check_tile_pixels(tileset: TileSet, *, compute: bool = True) -> list[TileProblem] | Delayed:
    """Read every tile once and report those that cannot make a mosaic.

    Parameters
    ----------
    tileset : TileSet
        From :func:`mosaicflow.io.read_tileset`.
    compute : bool
        ``True``: compute now (on the current Dask client or scheduler) and return the list;
        ``False``: return the lazy result (one task per :data:`TILES_PER_TASK` tiles,
        ``check-tile-*``, and one task gathering their answers), for the caller to compute.

    Returns
    -------
    list of TileProblem, or dask.delayed.Delayed
        The problems in the tiles table's order; empty when every tile is usable.

    Notes
    -----
    Each task holds one tile in memory at a time and returns a few bytes per tile. A tile is
    ``non-finite`` when any pixel is NaN or infinite (float tiles only), ``blank`` when all its
    pixels are equal (an all-black tile, a detector that was off), ``unreadable`` when
    :func:`read_tile` fails.
    See :func:`raise_for_tile_problems` for the error naming them.
    """
    token = dask.base.tokenize(tileset.to_meta(), tileset.tiles[["path", "row", "col"]])
    tiles = [
        (str(path), int(row), int(col))
        for path, row, col in tileset.tiles[["path", "row", "col"]].itertuples(index=False)
    ]
    read = (tuple(tileset.tile_shape), str(tileset.dtype), int(tileset.crop_bottom))
    parts = [
        dask.delayed(_check_tiles, pure=True)(some, *read, dask_key_name=f"check-tile-{token}-{k}")
        for k, some in enumerate(batches(tiles, TILES_PER_TASK))
    ]
    gathered = dask.delayed(_found, pure=True)(*parts, dask_key_name=f"check-tiles-{token}")
    if not compute:
        return gathered
    return list(gathered.compute())


def raise_for_tile_problems(problems: list[TileProblem], source: Any = "tile set") -> None:
    """Raise naming the unusable tiles, if there are any.

    Parameters
    ----------
    problems : list of TileProblem
        From :func:`check_tile_pixels`.
    source : str
        What the tiles are (the input path), for the message.

    Raises
    ------
    TileReadError
        Naming the first :data:`SHOWN` tiles and what is wrong with them, and how many more.
    """
    if not problems:
        return
    shown = "; ".join(str(p) for p in problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    raise TileReadError(
        f"{source}: {len(problems)} tile(s) cannot be used: {shown}{more}. Replace or remove "
        "them (a removed tile is left uncovered with missing_tiles='blank')"
    )
