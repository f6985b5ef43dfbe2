"""Chunk-exact growth of seeds into instances: for any chunking, in memory or read from a store,
the labels equal the whole-image scikit-image watershed (``targets.instances_from_probability``);
particles larger than the halo are grown exactly from a store and refused by name in memory."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from mosaicflow.measure import label
from mosaicflow.segmentation.instances import ParticleTooLarge, grow_chunked
from mosaicflow.segmentation.metrics import tally
from mosaicflow.segmentation.targets import (
    instance_classes,
    instances_from_probability,
    u8_threshold,
)
from mosaicflow.synth.sem import synth_field

FG_T, SEED_T = 0.6, 0.75


@pytest.fixture(scope="module")
def field():
    """Noisy stored-scale probabilities of a synthetic field with touching pairs and
    agglomerates (ties in the uint8 levels are common, as in a real run)."""
    _, truth, _ = synth_field(
        (260, 300),
        snr=None,
        seed=5,
        touching_fraction=0.5,
        agglomerate_fraction=0.2,
        pixel_size_nm=3.0,
        density=40,
    )
    classes = instance_classes(truth)
    rng = np.random.default_rng(0)
    fg = np.clip((truth > 0) * 200 + rng.integers(0, 80, truth.shape), 0, 255).astype(np.uint8)
    interior = np.clip((classes == 1) * 180 + rng.integers(0, 100, truth.shape), 0, 255)
    return truth, fg, interior.astype(np.uint8)


def _reference(fg, interior, connectivity=2):
    return instances_from_probability(
        fg, interior, foreground_threshold=FG_T, seed_threshold=SEED_T, connectivity=connectivity
    )


def _largest_extent(labels):
    return max(
        max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndi.find_objects(labels)
    )


def _zarr(array, chunks):
    root = zarr.group(zarr.storage.MemoryStore())
    z = root.create_array("a", shape=array.shape, chunks=chunks, dtype=array.dtype)
    z[:] = array
    return da.from_zarr(z)


def test_the_reference_recovers_the_truth(field):
    truth, fg, interior = field
    ref = _reference(fg, interior)
    assert ref.max() > 20
    assert tally(truth, ref).scores()["f1"] > 0.98


@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("chunks", [(260, 300), (128, 100), (29, 31)])
def test_in_memory_growth_equals_the_whole_image(field, chunks, connectivity):
    _, fg, interior = field
    ref = _reference(fg, interior, connectivity)
    assert _largest_extent(ref) > 31  # the smallest chunks are smaller than a particle
    f, i = da.from_array(fg, chunks=chunks), da.from_array(interior, chunks=chunks)
    with dask.config.set(scheduler="threads"):
        seeds = label(i >= u8_threshold(SEED_T), connectivity=connectivity)
        out = grow_chunked(
            seeds, i, f, foreground_threshold=FG_T, connectivity=connectivity, max_particle_px=120
        ).compute()
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("chunks", [(128, 100), (29, 31)])
def test_stored_growth_widens_its_window_for_large_particles(field, chunks):
    """A 2-px halo is far smaller than the particles: each window is widened until its
    particles fit, and the result is still the whole image's."""
    _, fg, interior = field
    ref = _reference(fg, interior)
    with dask.config.set(scheduler="threads"):
        seeds = label(
            da.from_array(interior, chunks=chunks) >= u8_threshold(SEED_T), connectivity=2
        )
        seeds = _zarr(seeds.compute(), chunks)
        out = grow_chunked(
            seeds,
            _zarr(interior, chunks),
            _zarr(fg, chunks),
            foreground_threshold=FG_T,
            max_particle_px=2,
        ).compute()
    np.testing.assert_array_equal(out, ref)


def test_in_memory_growth_refuses_a_particle_beyond_its_halo(field):
    _, fg, interior = field
    chunks = (29, 31)
    f, i = da.from_array(fg, chunks=chunks), da.from_array(interior, chunks=chunks)
    with dask.config.set(scheduler="threads"):
        seeds = label(i >= u8_threshold(SEED_T), connectivity=2)
        lazy = grow_chunked(seeds, i, f, foreground_threshold=FG_T, max_particle_px=3)
        with pytest.raises(
            ParticleTooLarge, match=r"pixel \(y=\d+, x=\d+\) extends more than max_particle_px=3"
        ):
            lazy.compute()


def test_stored_growth_refuses_a_foreground_wider_than_the_largest_window():
    """A foreground spanning the image is a threshold problem: the message says so."""
    fg = np.full((200, 200), 255, np.uint8)
    interior = np.zeros((200, 200), np.uint8)
    interior[10:20, 10:20] = 255
    interior[150:160, 150:160] = 255
    seeds = ndi.label(interior >= 128)[0].astype(np.uint32)
    chunks = (50, 50)
    with dask.config.set(scheduler="threads"):
        lazy = grow_chunked(
            _zarr(seeds, chunks),
            _zarr(interior, chunks),
            _zarr(fg, chunks),
            foreground_threshold=0.5,
            max_particle_px=4,
            max_window_px=120,
        )
        with pytest.raises(ParticleTooLarge, match=r"threshold.*max_window_px"):
            lazy.compute()
        whole = grow_chunked(
            _zarr(seeds, chunks),
            _zarr(interior, chunks),
            _zarr(fg, chunks),
            foreground_threshold=0.5,
            max_particle_px=4,
        ).compute()
    ref = instances_from_probability(fg, interior, foreground_threshold=0.5, seed_threshold=0.5)
    np.testing.assert_array_equal(whole, ref)
    assert set(np.unique(whole)) == {1, 2}


def test_building_the_graph_computes_nothing(field):
    _, fg, interior = field
    f, i = da.from_array(fg, chunks=64), da.from_array(interior, chunks=64)
    seeds = da.from_array(np.zeros(fg.shape, np.uint32), chunks=64)

    class Forbid(dask.callbacks.Callback):
        def _start(self, dsk):
            raise AssertionError("a compute ran while building the graph")

    with Forbid():
        out = grow_chunked(seeds, i, f, foreground_threshold=FG_T)
    assert out.chunks == seeds.chunks and out.dtype == np.uint32


@pytest.mark.parametrize("chunks", [(128, 100), (29, 31)])
def test_dropping_small_seeds_is_exact_too(field, chunks):
    """Seeds under ``min_seed_px`` are dropped the same way in every window as on the whole
    image (a seed lies in one foreground component, which lies in its window)."""
    _, fg, interior = field
    ref = instances_from_probability(
        fg, interior, foreground_threshold=FG_T, seed_threshold=SEED_T, min_seed_px=40
    )
    assert len(np.unique(ref)) < len(np.unique(_reference(fg, interior)))  # some were dropped
    with dask.config.set(scheduler="threads"):
        seeds = label(
            da.from_array(interior, chunks=chunks) >= u8_threshold(SEED_T), connectivity=2
        )
        lazy = grow_chunked(
            seeds,
            da.from_array(interior, chunks=chunks),
            da.from_array(fg, chunks=chunks),
            foreground_threshold=FG_T,
            max_particle_px=120,
            min_seed_px=40,
        )
        stored = grow_chunked(
            _zarr(seeds.compute(), chunks),
            _zarr(interior, chunks),
            _zarr(fg, chunks),
            foreground_threshold=FG_T,
            max_particle_px=2,
            min_seed_px=40,
        )
        np.testing.assert_array_equal(lazy.compute(), ref)
        np.testing.assert_array_equal(stored.compute(), ref)
