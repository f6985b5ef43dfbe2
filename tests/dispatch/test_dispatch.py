"""Dispatch: NumPy chunks get SciPy / scikit-image, chosen by the chunk type of a Dask array."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from mosaicflow import dispatch


def test_dispatch_numpy_gets_scipy():
    image = np.zeros((4, 4))
    assert dispatch.get("median_filter", image) is scipy.ndimage.median_filter
    # the Gaussian's CPU entry is SciPy's result through OpenCV (tests/restoration)
    assert dispatch.get("gaussian_filter", image).__module__.endswith("_gaussian_rows")
    assert dispatch.array_module(image) is np
    with pytest.raises(KeyError, match="known"):
        dispatch.get("no_such_function", image)


def test_dispatch_uses_dask_meta():
    import dask.array as da

    assert dispatch.get("label", da.zeros((4, 4), chunks=2)) is scipy.ndimage.label
