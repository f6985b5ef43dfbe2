"""Cross-chunk labelling and the particle table against SciPy / scikit-image on the whole image."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import scipy.ndimage as ndi
import skimage.measure
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from mosaicflow import synth
from mosaicflow.classify.features import fourier_features, radial_profile
from mosaicflow.errors import ConfigError
from mosaicflow.measure import label, regionprops_table
from mosaicflow.measure._kernel import feret_diameter_min

# Whole image, 4x6 chunks, uneven 7x7 chunks, thin strips: all with >= 3x3 chunks except the
# first, and all smaller than the giant particle of the field below.
CHUNKINGS = [(1000, 1000), (64, 64), (37, 53), (23, 150)]
SKIMAGE_PROPS = (
    "label",
    "num_pixels",
    "area",
    "equivalent_diameter_area",
    "centroid",
    "bbox",
    "perimeter",
    "feret_diameter_max",
    "axis_major_length",
    "axis_minor_length",
    "orientation",
    "eccentricity",
    "solidity",
    "area_convex",
    "intensity_mean",
    "intensity_std",
    "intensity_min",
    "intensity_max",
)


@pytest.fixture(scope="module")
def field():
    """A synthetic particle field (touching pairs, agglomerates) plus one giant, irregular
    particle larger than every chunk of CHUNKINGS but the first."""
    image, labels, _ = synth.synth_field(
        (240, 330), snr=12.0, seed=5, density=150.0, touching_fraction=0.2, agglomerate_fraction=0.1
    )
    rng = np.random.default_rng(0)
    blob = ndi.gaussian_filter(rng.standard_normal((110, 140)), 4) > -0.01
    mask = labels > 0
    mask[100:210, 150:290] |= blob
    lab, n = ndi.label(mask)
    assert n >= 20 and np.bincount(lab.ravel())[1:].max() > 64 * 64
    return image.astype(np.float64), lab.astype(np.uint32)


def _assert_table_equal(table: pd.DataFrame, expected: dict[str, np.ndarray]) -> None:
    table = table.sort_values("label", ignore_index=True)
    assert list(table["label"]) == list(expected["label"])
    for column, values in expected.items():
        values = np.asarray(values)
        if np.issubdtype(values.dtype, np.integer):
            np.testing.assert_array_equal(table[column], values, err_msg=column)
        else:
            # <= 1e-9 relative; values that are zero up to rounding get the column's scale.
            scale = np.nanmax(np.abs(values)) if values.size else 1.0
            np.testing.assert_allclose(
                table[column], values, rtol=1e-9, atol=1e-12 * scale, err_msg=column
            )


# -- labelling ------------------------------------------------------------------------------


@pytest.mark.parametrize("scratch", [False, True])
@pytest.mark.parametrize("connectivity", [1, 2])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_label_equals_scipy_exactly(field, chunks, connectivity, scratch, tmp_path):
    mask = field[1] > 0
    expected, n = ndi.label(mask, structure=ndi.generate_binary_structure(2, connectivity))
    target = str(tmp_path / "local.zarr") if scratch else None
    out = label(da.from_array(mask, chunks=chunks), connectivity=connectivity, scratch=target)
    out = out.compute(scheduler="sync")
    assert out.dtype == np.uint32
    assert int(out.max()) == n
    np.testing.assert_array_equal(out, expected)


@settings(max_examples=20, deadline=None)
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


@pytest.mark.cluster
def test_label_ids_do_not_depend_on_workers(field, client, tmp_path):
    mask = field[1] > 0
    expected, _ = ndi.label(mask)
    lazy = label(da.from_array(mask, chunks=(37, 53)), scratch=str(tmp_path / "s.zarr"))
    np.testing.assert_array_equal(client.compute(lazy).result(), expected)


def test_label_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="boolean"):
        label(da.zeros((4, 4), chunks=2, dtype=np.float32))
    with pytest.raises(ConfigError, match="connectivity"):
        label(da.zeros((4, 4), chunks=2, dtype=bool), connectivity=3)
    with pytest.raises(ConfigError, match="regular chunks"):
        label(da.zeros((9, 9), chunks=((2, 5, 2), 9), dtype=bool), scratch=str(tmp_path / "s"))


# -- the particle table ---------------------------------------------------------------------


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_table_equals_skimage_on_the_whole_image(field, chunks):
    image, labels = field
    table = regionprops_table(
        da.from_array(labels, chunks=chunks), da.from_array(image, chunks=chunks), spacing=2.0
    ).compute(scheduler="sync")
    expected = skimage.measure.regionprops_table(
        labels, image, properties=SKIMAGE_PROPS, spacing=(2.0, 2.0)
    )
    _assert_table_equal(table, expected)
    # Hu invariants are scale-free; scikit-image computes them for unit spacing only.
    hu = skimage.measure.regionprops_table(labels, properties=("label", "moments_hu"))
    _assert_table_equal(table, hu)


@pytest.mark.parametrize("halo", [1, 6])
def test_particles_larger_than_the_halo_are_assembled_exactly(field, halo):
    image, labels = field
    table = regionprops_table(
        da.from_array(labels, chunks=(37, 53)), da.from_array(image, chunks=(37, 53)), halo=halo
    )
    giants = table.partitions[table.npartitions - 1].compute(scheduler="sync")
    sizes = np.bincount(labels.ravel())
    assert len(giants) > 0 and sizes[giants["label"].to_numpy()].max() == sizes[1:].max()
    expected = skimage.measure.regionprops_table(labels, image, properties=SKIMAGE_PROPS)
    _assert_table_equal(table.compute(scheduler="sync"), expected)


def test_numpy_input_gives_the_same_pandas_table(field):
    image, labels = field
    table = regionprops_table(labels, image)
    assert isinstance(table, pd.DataFrame)
    lazy = regionprops_table(da.from_array(labels, chunks=64), da.from_array(image, chunks=64))
    pd.testing.assert_frame_equal(
        table.drop(columns="touches_chunk"),
        lazy.compute().sort_values("label", ignore_index=True).drop(columns="touches_chunk"),
        rtol=1e-12,
    )


def test_dataarray_gives_nm_in_the_image_frame(field):
    labels = field[1]
    y = 1000.0 + np.arange(labels.shape[0]) * 2.5
    x = -40.0 + np.arange(labels.shape[1]) * 2.5
    arr = xr.DataArray(
        da.from_array(labels, chunks=64),
        dims=("y", "x"),
        coords={"y": y, "x": x},
        attrs={"pixel_size_nm": [2.5, 2.5]},
    )
    table = regionprops_table(arr).compute().sort_values("label", ignore_index=True)
    px = skimage.measure.regionprops_table(labels, properties=("centroid", "perimeter", "area"))
    np.testing.assert_allclose(table["area"], px["area"] * 2.5**2)
    np.testing.assert_allclose(table["perimeter"], px["perimeter"] * 2.5)
    np.testing.assert_allclose(table["centroid-0"], 1000.0 + px["centroid-0"] * 2.5)
    np.testing.assert_allclose(table["centroid-1"], -40.0 + px["centroid-1"] * 2.5)


def test_derived_shape_columns_follow_their_definitions(field):
    table = regionprops_table(field[1])
    a, p = table["area"], table["perimeter"]
    np.testing.assert_allclose(table["circularity"], np.minimum(1.0, 4 * np.pi * a / p**2))
    major, minor = table["axis_major_length"], table["axis_minor_length"]
    np.testing.assert_allclose(table["aspect_ratio"], major / minor)
    np.testing.assert_allclose(table["roundness"], 4 * a / (np.pi * major**2))
    np.testing.assert_allclose(table["boundary_area_ratio"], p / a)
    assert (table["feret_diameter_min"] <= table["feret_diameter_max"] + 1e-9).all()


def test_extra_intensities_flags_and_coverage(field):
    image, labels = field
    raw = image * 3.0 + 7.0
    coverage = np.ones(labels.shape, dtype=bool)
    coverage[:, 300:] = False  # a missing tile on the right
    coverage[150:, :40] = False
    table = regionprops_table(
        da.from_array(labels, chunks=(64, 64)),
        da.from_array(image, chunks=(64, 64)),
        extra_intensity={"raw": da.from_array(raw, chunks=(64, 64))},
        coverage=da.from_array(coverage, chunks=(64, 64)),
    ).compute()
    table = table.sort_values("label", ignore_index=True)
    ref = skimage.measure.regionprops_table(
        labels, raw, properties=("intensity_mean", "intensity_std", "intensity_max")
    )
    for stat in ("mean", "std", "max"):
        np.testing.assert_allclose(table[f"intensity_{stat}_raw"], ref[f"intensity_{stat}"])
    near = ndi.binary_dilation(~coverage, structure=np.ones((3, 3)))
    touched = np.unique(labels[near & (labels > 0)])
    np.testing.assert_array_equal(table["touches_uncovered"], np.isin(table["label"], touched))
    assert 0 < table["touches_uncovered"].sum() < len(table)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    np.testing.assert_array_equal(table["touches_edge"], np.isin(table["label"], edge[edge > 0]))
    spans = (table["bbox-0"] // 64 != (table["bbox-2"] - 1) // 64) | (
        table["bbox-1"] // 64 != (table["bbox-3"] - 1) // 64
    )
    np.testing.assert_array_equal(table["touches_chunk"], spans)


def test_property_groups_select_columns(field):
    table = regionprops_table(field[1], properties=("basic",))
    assert "perimeter" not in table and "area" in table and "touches_edge" in table
    with pytest.raises(ConfigError, match="unknown property group"):
        regionprops_table(field[1], properties=("basic", "colour"))


def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="integer dtype"):
        regionprops_table(da.zeros((4, 4), chunks=2, dtype=np.float32))
    with pytest.raises(TypeError, match="integer dtype"):
        regionprops_table(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ConfigError, match="anisotropic"):
        regionprops_table(np.zeros((4, 4), dtype=np.uint32), spacing=(2.0, 3.5))
    with pytest.raises(ValueError, match="shape"):
        regionprops_table(np.zeros((4, 4), dtype=np.uint32), np.zeros((4, 5)))


def test_empty_label_image_gives_a_typed_empty_table():
    table = regionprops_table(da.zeros((50, 50), chunks=20, dtype=np.uint32), da.ones((50, 50)))
    out = table.compute()
    assert len(out) == 0 and out["label"].dtype == np.uint32 and "perimeter" in out


# -- kernels --------------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 0.3, 0.9, 1.4])
def test_feret_min_equals_a_brute_force_caliper(angle):
    yy, xx = np.mgrid[:80, :80] - 40.0
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    rect = (np.abs(u) <= 25) & (np.abs(v) <= 8)
    region = skimage.measure.regionprops(rect.astype(np.uint8))[0]
    contour = np.vstack(
        skimage.measure.find_contours(np.pad(region.image_convex, 2), 0.5, fully_connected="high")
    )

    def widths(thetas):
        return np.ptp(contour @ np.stack([np.cos(thetas), np.sin(thetas)]), axis=0)

    coarse = np.linspace(0, np.pi, 3600, endpoint=False)
    best = coarse[np.argmin(widths(coarse))]
    fine = np.linspace(best - 1e-3, best + 1e-3, 4001)  # refine around the coarse minimum
    assert feret_diameter_min(region.image_convex) == pytest.approx(widths(fine).min(), abs=1e-5)
    assert 16 <= feret_diameter_min(region.image_convex) <= 19


def test_radial_profile_equals_a_loop_over_rings():
    rng = np.random.default_rng(1)
    img = rng.random((17, 22))
    prof = radial_profile(img)
    yy, xx = np.indices(img.shape)
    r = np.rint(np.hypot(yy - 8, xx - 11)).astype(int)
    for k in range(r.max() + 1):
        assert prof[k] == pytest.approx(img[r == k].mean())


@pytest.mark.parametrize("period", [4.0, 6.5])
def test_fourier_centre_of_mass_follows_the_fringe_frequency(period):
    yy, xx = np.mgrid[:64, :64]
    mask = (yy - 32) ** 2 + (xx - 32) ** 2 < 28**2
    fringes = 1.0 + np.sin(2 * np.pi * (0.6 * xx + 0.8 * yy) / period)
    flat = np.ones_like(fringes)
    com_fringes = fourier_features(fringes, mask)[2]
    assert abs(com_fringes - 1 / period) < 0.25 / period
    assert fourier_features(flat, mask)[:2] == (0.0, 0.0)
    mean, std = fourier_features(fringes, mask)[3:]
    assert mean == pytest.approx(fringes[mask].mean()) and std == pytest.approx(fringes[mask].std())
