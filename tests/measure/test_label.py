"""Cross-chunk labelling against SciPy's and scikit-image's whole-image labelling."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import skimage.measure
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaicflow.errors import ConfigError
from mosaicflow.measure import label
from mosaicflow.measure.label import threshold_summary

# Whole image, 4x6 chunks, uneven 7x7 chunks, thin strips: all with >= 3x3 chunks except the
# first, and all smaller than the giant particle of the ``field`` fixture (conftest.py).
CHUNKINGS = [(1000, 1000), (64, 64), (37, 53), (23, 150)]


@pytest.mark.parametrize("keep", ["held", "scratch", "recompute"])
@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_label_equals_scipy_exactly(field, chunks, connectivity, keep, tmp_path):
    mask = field[1] > 0
    expected, n = ndi.label(mask, structure=ndi.generate_binary_structure(2, connectivity))
    target = str(tmp_path / "local.zarr") if keep == "scratch" else None
    out = label(
        da.from_array(mask, chunks=chunks),
        connectivity=connectivity,
        scratch=target,
        recompute=keep == "recompute",
    )
    out = out.compute(scheduler="sync")
    assert out.dtype == np.uint32
    assert int(out.max()) == n
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("chunks", CHUNKINGS[1:])
def test_connectivity_means_what_it_means_in_skimage(field, chunks, connectivity):
    """``connectivity`` as in ``skimage.measure.label``: the same particles (ids equal up to a
    renumbering), and the same ids as ``scipy.ndimage.label`` with the structure
    ``generate_binary_structure(2, connectivity)``."""
    mask = field[1] > 0
    theirs = skimage.measure.label(mask, connectivity=connectivity)
    scipy_ids, _ = ndi.label(mask, structure=ndi.generate_binary_structure(2, connectivity))
    ours = label(da.from_array(mask, chunks=chunks), connectivity=connectivity).compute()
    np.testing.assert_array_equal(ours, scipy_ids)
    # One to one: each (ours, theirs) pair of ids is one particle of each labelling.
    pairs = np.unique(np.stack([ours.ravel(), theirs.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(ours)) == len(np.unique(theirs))
    assert ((pairs[0] == 0) == (pairs[1] == 0)).all()


@settings(max_examples=20)
@given(
    seed=st.integers(0, 2**16),
    cy=st.integers(2, 40),
    cx=st.integers(2, 40),
    density=st.floats(0.2, 0.7),
    connectivity=st.sampled_from([1, 2]),
)
def test_label_random_masks(seed, cy, cx, density, connectivity):
    rng = np.random.default_rng(seed)
    mask = rng.random((61, 47)) < density
    expected, _ = ndi.label(mask, structure=ndi.generate_binary_structure(2, connectivity))
    out = label(da.from_array(mask, chunks=(cy, cx)), connectivity=connectivity).compute(
        scheduler="sync"
    )
    np.testing.assert_array_equal(out, expected)


def test_label_keeps_separated_particles_apart_at_chunk_faces():
    """A one-pixel gap lying exactly on a chunk face, and a diagonal contact at a chunk corner."""
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:19, 5:35] = True  # ends on row 18
    mask[20:35, 5:35] = True  # starts on row 20: the gap is row 19, the face between 19 and 20
    mask[19, 38] = mask[20, 39] = True  # diagonal contact across the corner of four chunks
    for connectivity, n_expected in ((1, 4), (2, 3)):
        expected, n = ndi.label(mask, structure=ndi.generate_binary_structure(2, connectivity))
        assert n == n_expected
        out = label(da.from_array(mask, chunks=(20, 39)), connectivity=connectivity).compute()
        np.testing.assert_array_equal(out, expected)


class _CountedReads:
    """A mask that records the box of every read of some pixels (Dask's empty probe for the
    dtype is left out)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask, self.shape, self.dtype, self.ndim = mask, mask.shape, mask.dtype, mask.ndim
        self.reads: list[tuple[int, ...]] = []

    def __getitem__(self, key):
        out = self.mask[key]
        if out.size:
            self.reads.append(tuple(v for k in key for v in (k.start, k.stop)))
        return out


def test_recompute_reads_each_chunk_again_only_after_every_first_read(field):
    """``recompute=True`` keeps nothing between the steps: each chunk of the mask is read
    twice, and no second read comes before the last first read (step 3's reads wait for
    step 2, which needs every chunk's summary)."""
    mask = field[1] > 0
    source = _CountedReads(mask)
    lazy = label(da.from_array(source, chunks=(64, 64), asarray=False), recompute=True)
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), ndi.label(mask)[0])
    n = lazy.npartitions
    assert len(source.reads) == 2 * n
    assert len(set(source.reads[:n])) == len(set(source.reads[n:])) == n
    with pytest.raises(ConfigError, match="not both"):
        label(da.from_array(mask, chunks=64), scratch="unused.zarr", recompute=True)


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_step_1_done_by_the_images_writer_gives_the_same_labels(field, chunks, connectivity):
    """``summaries`` from :func:`threshold_summary` of each chunk of the thresholded image
    (what the probability stage's writing tasks return): the same labels as SciPy's, and each
    chunk of the mask is read once, for step 3."""
    probability = np.where(field[1] > 0, 200, 30).astype(np.uint8)
    mask = probability >= 128
    expected, _ = ndi.label(mask, structure=ndi.generate_binary_structure(2, connectivity))
    lazy = da.from_array(probability, chunks=chunks)
    starts = [np.cumsum((0, *c[:-1])) for c in lazy.chunks]
    grid = np.empty(lazy.numblocks, dtype=object)
    for i, j in np.ndindex(*lazy.numblocks):
        grid[i, j] = threshold_summary(
            lazy.blocks[i, j].compute(),
            (int(starts[0][i]), int(starts[1][j])),
            cut=128,
            connectivity=connectivity,
            width=mask.shape[1],
        )
    source = _CountedReads(mask)
    out = label(
        da.from_array(source, chunks=chunks, asarray=False),
        connectivity=connectivity,
        recompute=True,
        summaries=grid,
    )
    np.testing.assert_array_equal(out.compute(scheduler="sync"), expected)
    assert len(source.reads) == len(set(source.reads)) == out.npartitions
    with pytest.raises(ConfigError, match="recompute=True"):
        label(da.from_array(mask, chunks=chunks), summaries=grid)
    with pytest.raises(ConfigError, match="grid"):
        label(da.from_array(mask, chunks=(11, 13)), recompute=True, summaries=grid)


@pytest.mark.cluster
@pytest.mark.parametrize("keep", ["scratch", "recompute"])
def test_label_ids_do_not_depend_on_workers(field, client, tmp_path, keep):
    mask = field[1] > 0
    expected, _ = ndi.label(mask)
    lazy = label(
        da.from_array(mask, chunks=(37, 53)),
        scratch=str(tmp_path / "s.zarr") if keep == "scratch" else None,
        recompute=keep == "recompute",
    )
    np.testing.assert_array_equal(client.compute(lazy).result(), expected)


def test_label_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="boolean"):
        label(da.zeros((4, 4), chunks=2, dtype=np.float32))
    with pytest.raises(ConfigError, match="connectivity"):
        label(da.zeros((4, 4), chunks=2, dtype=bool), connectivity=3)
    with pytest.raises(ConfigError, match="regular chunks"):
        label(da.zeros((9, 9), chunks=((2, 5, 2), 9), dtype=bool), scratch=str(tmp_path / "s"))


@pytest.mark.parametrize("connectivity", [1, 2])
def test_each_chunk_is_labelled_into_scipys_components(connectivity):
    """Step 1's local labels (cc3d) against ``scipy.ndimage.label`` on 400 random masks, C- and
    F-ordered and strided: the same components, numbered 1..n with every number present, and in
    SciPy's own order with 4-connectivity. cc3d's 8-connected labelling of a boolean array
    splits or merges components on some of these masks; of its uint8 view it does not."""
    from mosaicflow.measure.label import _label_chunk

    rng = np.random.default_rng(7)
    structure = ndi.generate_binary_structure(2, connectivity)
    for k in range(400):
        mask = rng.random(tuple(rng.integers(1, 70, 2))) < rng.uniform(0.05, 0.95)
        mask = mask.T if k % 4 == 0 else mask[::2] if k % 4 == 1 else mask
        ours, n = _label_chunk(mask, connectivity)
        theirs, n_scipy = ndi.label(mask, structure=structure)
        assert ours.dtype == np.uint32 and ours.shape == mask.shape
        assert n == n_scipy
        assert set(np.unique(ours[ours > 0]).tolist()) == set(range(1, n + 1))
        pairs = np.unique(np.stack([ours.ravel(), theirs.ravel()]), axis=1)
        assert pairs.shape[1] == len(np.unique(ours)) == len(np.unique(theirs))  # one to one
        assert np.array_equal(ours == 0, theirs == 0)
        if connectivity == 1:
            np.testing.assert_array_equal(ours, theirs)
