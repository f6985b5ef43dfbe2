"""Where the fused mosaic's pixels lie in the true mosaic of a synthetic acquisition, tile by
tile: the frame that truth matching (:mod:`mosaicflow.report.matching`) reads the true labels
through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mosaicflow.errors import ConfigError

#: :meth:`TileFrame.truth_window` reads the truth in one read when the rectangle it needs is at
#: most this many times the window's area.
ONE_READ_MAX = 2.0


@dataclass(frozen=True)
class TileFrame:
    """Where the fused mosaic's pixels lie in the true mosaic of a synthetic acquisition.

    Tile ``i`` was rendered from the true scene at its true origin ``true_origins[i]`` and
    placed by the fusion at ``fused_origins[i]`` (its nominal stage position, rounded, shifted
    so the smallest is 0). A fused pixel ``p`` shown by tile ``i`` is therefore the true pixel
    ``p - fused_origins[i] + true_origins[i]``: the frames differ by one shift per tile (the
    stage error, plus a common offset), not by one global shift.

    Which tile shows a fused pixel is decided by the fusion's own rule
    (:func:`mosaicflow.stitch.nearest.nearest_tile`: the covering tile with the nearest centre).
    """

    fused_origins: np.ndarray
    true_origins: np.ndarray
    tile_shape: tuple[int, int]

    @classmethod
    def from_tables(
        cls, tiles: pd.DataFrame, true_origins: pd.DataFrame, tile_shape: tuple[int, int]
    ) -> TileFrame:
        """From the run's ``tiles`` table (``row, col, y_px, x_px``: nominal origins) and the
        truth's ``tile_origins.csv`` (``row, col, y_px, x_px``: true origins)."""
        from mosaicflow.stitch.fuse import _integer_origins

        fused = _integer_origins(tiles)
        key = true_origins.set_index(["row", "col"])[["y_px", "x_px"]]
        idx = pd.MultiIndex.from_arrays(
            [tiles["row"].to_numpy(np.int64), tiles["col"].to_numpy(np.int64)]
        )
        missing = idx.difference(key.index)
        if len(missing):
            raise ConfigError(f"tiles without a true origin: {list(missing)[:5]}")
        true = key.loc[idx].to_numpy(np.float64)
        if not np.allclose(true, np.rint(true)):
            raise ConfigError("true tile origins are not whole pixels")
        return cls(fused, np.rint(true).astype(np.int64), (int(tile_shape[0]), int(tile_shape[1])))

    @property
    def fused_shape(self) -> tuple[int, int]:
        """Shape of the fused mosaic."""
        h, w = self.tile_shape
        return int(self.fused_origins[:, 0].max() + h), int(self.fused_origins[:, 1].max() + w)

    def truth_window(self, truth: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The true labels the fused mosaic shows at ``[y0:y1, x0:x1]`` (0 where no tile).

        For each tile showing part of the window, takes the part of the truth it shows there
        (its part of the window shifted into the true frame by the tile's shift, clipped to
        the truth). Each tile's part is pasted whole; then, where tiles overlap, each pixel is
        taken from the tile the fusion's rule shows there (:func:`nearest_cells`), so no map of
        the whole window's tiles is made. The truth is read once, over the rectangle that holds
        every part (the tiles' shifts differ by the stage's error, so it is little larger than
        the window), unless that rectangle would exceed :data:`ONE_READ_MAX` times the
        window's area: then part by part.
        """
        from mosaicflow.stitch.nearest import nearest_cells

        out = np.zeros((y1 - y0, x1 - x0), dtype=np.uint32)
        h, w = self.tile_shape
        th, tw = int(truth.shape[0]), int(truth.shape[1])
        parts = {}
        for k, (fy, fx) in enumerate(self.fused_origins):
            dy, dx = (int(v) for v in self.true_origins[k] - self.fused_origins[k])
            # the tile's part of the window, and of that the part whose true pixels exist
            sy0, sy1 = max(y0, int(fy), -dy), min(y1, int(fy) + h, th - dy)
            sx0, sx1 = max(x0, int(fx), -dx), min(x1, int(fx) + w, tw - dx)
            if sy1 > sy0 and sx1 > sx0:
                parts[k] = (dy, dx, sy0, sy1, sx0, sx1)
        if not parts:
            return out
        by0 = min(p[2] + p[0] for p in parts.values())
        bx0 = min(p[4] + p[1] for p in parts.values())
        by1 = max(p[3] + p[0] for p in parts.values())
        bx1 = max(p[5] + p[1] for p in parts.values())
        one_read = (by1 - by0) * (bx1 - bx0) <= ONE_READ_MAX * out.size
        block = np.asarray(truth[by0:by1, bx0:bx1]) if one_read else None

        def true_at(k: int, ya: int, yb: int, xa: int, xb: int) -> np.ndarray:
            dy, dx = parts[k][:2]
            if block is not None:
                return block[ya + dy - by0 : yb + dy - by0, xa + dx - bx0 : xb + dx - bx0]
            return np.asarray(truth[ya + dy : yb + dy, xa + dx : xb + dx])

        for k, (_, _, sy0, sy1, sx0, sx1) in parts.items():  # table order
            out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = true_at(k, sy0, sy1, sx0, sx1)
        _, _, cells = nearest_cells((y0, y1, x0, x1), self.fused_origins, self.tile_shape)
        for (a, b, c, d), covering, cell in cells:
            view = out[a:b, c:d]
            view[...] = 0
            for k in covering:
                if k not in parts:  # the tile shows none of the truth here
                    continue
                _, _, sy0, sy1, sx0, sx1 = parts[k]
                ya, yb = max(a, sy0 - y0), min(b, sy1 - y0)
                xa, xb = max(c, sx0 - x0), min(d, sx1 - x0)
                if yb <= ya or xb <= xa:
                    continue
                shown = cell[ya - a : yb - a, xa - c : xb - c] == k + 1
                true = true_at(k, ya + y0, yb + y0, xa + x0, xb + x0)
                np.copyto(
                    view[ya - a : yb - a, xa - c : xb - c], true, where=shown, casting="unsafe"
                )
        return out
