"""Training data: image/mask folders (pairing, errors naming the files), masks read as instances,
grey images from RGB, synthetic fields, and the random crops a batch is drawn with."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import tifffile
from PIL import Image
from skimage.draw import disk
from skimage.measure import label as sk_label

from mosaicflow.errors import ConfigError
from mosaicflow.segmentation import datasets
from mosaicflow.segmentation.datasets import (
    PERCENTILES,
    Sample,
    as_instances,
    load_pairs,
    normalise,
    pair_paths,
    random_crop,
    read_grey,
    read_names,
    synthetic_samples,
)
from mosaicflow.segmentation.metrics import tally
from mosaicflow.segmentation.targets import instance_classes


def _binary_mask(shape=(48, 64)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[disk((12, 12), 6, shape=shape)] = 255
    m[disk((30, 40), 9, shape=shape)] = 255
    m[disk((30, 52), 6, shape=shape)] = 255  # overlaps the one before: one component
    m[40, 5] = m[41, 6] = 255  # diagonal neighbours: one 8-connected component
    return m


def _image(shape=(48, 64), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, shape).astype(np.uint16)


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i, stem in enumerate(["a", "b", "c"]):
        tifffile.imwrite(images / f"{stem}.tif", _image(seed=i))
        Image.fromarray(_binary_mask()).save(masks / f"{stem}.png")
    return images, masks


def test_pairs_by_file_name_without_suffix(folders):
    images, masks = folders
    (images / "notes.txt").write_text("not an image")
    pairs = pair_paths(images, masks)
    assert [(s, i.name, m.name) for s, i, m in pairs] == [
        ("a", "a.tif", "a.png"),
        ("b", "b.tif", "b.png"),
        ("c", "c.tif", "c.png"),
    ]
    assert [s for s, _, _ in pair_paths(images, masks, ["c", "a"])] == ["c", "a"]


def test_pairing_errors_name_the_files(folders, tmp_path):
    images, masks = folders
    with pytest.raises(ConfigError, match=r"--images: .*nowhere is not a folder"):
        pair_paths(tmp_path / "nowhere", masks)
    with pytest.raises(ConfigError, match=r"--masks: .*nowhere is not a folder"):
        pair_paths(images, tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"--masks: no mask files in .*empty"):
        pair_paths(images, empty)
    with pytest.raises(ConfigError, match=r"--images: no image files"):
        pair_paths(empty, masks)
    # an image without a mask is named, with the pairing rule
    tifffile.imwrite(images / "d.tif", _image())
    with pytest.raises(ConfigError, match=r"1 image\(s\) .* no mask .*\['d'\].*without suffix"):
        pair_paths(images, masks)
    (images / "d.tif").unlink()
    # a mask without an image too
    Image.fromarray(_binary_mask()).save(masks / "a_mask.png")
    with pytest.raises(ConfigError, match=r"1 mask\(s\) .* no image .*\['a_mask'\]"):
        pair_paths(images, masks)
    # ... unless a list of names picks the pairs
    assert len(pair_paths(images, masks, ["a", "b"])) == 2
    with pytest.raises(ConfigError, match=r"listed name\(s\) have no image .*\['zz'\]"):
        pair_paths(images, masks, ["a", "zz"])


def test_masks_named_differently_are_refused(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("img1", "img2"):
        Image.fromarray(_image().astype(np.uint8)).save(images / f"{stem}.png")
        Image.fromarray(_binary_mask()).save(masks / f"{stem}_mask.png")
    with pytest.raises(ConfigError, match=r"2 image\(s\) .*\['img1', 'img2'\]"):
        pair_paths(images, masks)


def test_a_mask_of_another_size_names_both_files(folders):
    images, masks = folders
    Image.fromarray(_binary_mask((48, 60))).save(masks / "b.png")
    with pytest.raises(
        ConfigError, match=r"mask .*b\.png is 48x60 px but its image .*b\.tif is 48x64"
    ):
        load_pairs(images, masks)


def test_load_pairs_reads_normalised_images_and_instances(folders):
    images, masks = folders
    samples = load_pairs(images, masks)
    assert [s.name for s in samples] == ["a", "b", "c"]
    raw = tifffile.imread(images / "b.tif").astype(np.float32)
    low, high = np.percentile(raw, PERCENTILES)
    np.testing.assert_allclose(samples[1].image, (raw - low) / (high - low), rtol=1e-5, atol=1e-6)
    assert samples[1].image.dtype == np.float32
    # a binary mask becomes its 8-connected components, as scikit-image labels them
    expected = sk_label(_binary_mask() > 0, connectivity=2)
    assert expected.max() == 3
    np.testing.assert_array_equal(samples[0].labels, expected)
    assert samples[0].labels.dtype == np.uint32


def test_a_binary_jpeg_mask_is_its_connected_components(folders):
    """JPEG is lossy: a binary mask comes back with grey levels along its edges, which must not
    become instances of their own."""
    images, masks = folders
    for p in masks.iterdir():
        p.unlink()
    mask = _binary_mask()
    mask[38:, :12] = 0  # no two-pixel particle: JPEG may blur it away
    for stem in ("a", "b", "c"):
        Image.fromarray(mask).save(masks / f"{stem}.jpg", quality=90)
    labels = load_pairs(images, masks)[0].labels
    truth = sk_label(mask > 0, connectivity=2)
    assert labels.max() == truth.max() == 2
    # the same particles, up to a pixel or two along the edges
    scores = tally(truth, labels).scores()
    assert scores["f1"] == 1.0 and scores["mean_matched_iou"] > 0.95


def test_instance_maps_are_kept():
    lab = np.zeros((20, 20), np.uint16)
    lab[2:8, 2:8] = 7
    lab[2:8, 8:14] = 300  # touching 7: stays a particle of its own
    lab[12:18, 12:18] = 2
    out = as_instances(lab)
    np.testing.assert_array_equal(out, lab)
    assert out.dtype == np.uint32
    # a two-valued map is a binary mask whatever its values
    two = np.where(lab == 7, 9, 4).astype(np.uint8)
    np.testing.assert_array_equal(as_instances(two), (lab == 7).astype(np.uint32))
    assert not as_instances(np.zeros((5, 5), np.uint8)).any()
    # an RGB mask file: its first channel
    np.testing.assert_array_equal(as_instances(np.stack([lab] * 3, axis=-1)), lab)


def test_instance_map_files(tmp_path):
    images, masks = tmp_path / "i", tmp_path / "m"
    images.mkdir()
    masks.mkdir()
    lab = np.zeros((32, 32), np.uint16)
    lab[2:10, 2:10], lab[2:10, 10:20], lab[20:30, 5:15] = 1, 2, 1000
    tifffile.imwrite(masks / "x.tif", lab)
    Image.fromarray(lab.astype(np.uint16)).save(masks / "y.png")
    for stem in ("x", "y"):
        Image.fromarray(_image((32, 32)).astype(np.uint8)).save(images / f"{stem}.png")
    for s in load_pairs(images, masks):
        np.testing.assert_array_equal(s.labels, lab, err_msg=s.name)


def test_rgb_is_averaged(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 24, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_grey(tmp_path / "rgb.png"), rgb.astype(np.float32).mean(-1))
    rgba = np.concatenate([rgb, np.full((16, 24, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_grey(tmp_path / "rgba.png"), rgb.astype(np.float32).mean(-1))
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_allclose(read_grey(tmp_path / "rgb.tif"), rgb.astype(np.float32).mean(-1))
    grey = _image((8, 8))
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    out = read_grey(tmp_path / "grey.tif")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, grey)
    tifffile.imwrite(
        tmp_path / "stack.tif", np.zeros((2, 3, 8, 8), np.uint8), photometric="minisblack"
    )
    with pytest.raises(ConfigError, match=r"stack\.tif: expected a 2-D grey or RGB image"):
        read_grey(tmp_path / "stack.tif")


def test_normalise_maps_the_percentiles_to_0_and_1():
    img = np.random.default_rng(2).normal(100, 20, (50, 50))
    out = normalise(img)
    low, high = np.percentile(out, PERCENTILES)
    assert out.dtype == np.float32
    assert (low, high) == pytest.approx((0.0, 1.0), abs=1e-5)
    np.testing.assert_allclose(normalise(img, 100.0, 120.0), (img - 100) / 20, rtol=1e-5, atol=1e-6)
    assert np.isfinite(normalise(np.full((4, 4), 3.0))).all()  # constant: no division by zero


def test_read_names(tmp_path):
    p = tmp_path / "train.csv"
    p.write_text("img_01,foo\n\nimg_02\n  img_03 , 5\n")
    assert read_names(p) == ["img_01", "img_02", "img_03"]
    with pytest.raises(ConfigError, match=r"--names: .*missing\.csv is not a file"):
        read_names(tmp_path / "missing.csv")


def test_synthetic_samples():
    a = synthetic_samples(3, size=160, seed=4)
    b = synthetic_samples(3, size=160, seed=4)
    assert [s.name for s in a] == ["synth-0000", "synth-0001", "synth-0002"]
    for s, t in zip(a, b, strict=True):
        assert s.image.shape == s.labels.shape == (160, 160)
        assert s.image.dtype == np.float32 and s.labels.dtype == np.uint32
        np.testing.assert_array_equal(s.image, t.image)
        np.testing.assert_array_equal(s.labels, t.labels)
    assert sum(int(s.labels.max() > 0) for s in a) >= 1
    c = synthetic_samples(3, size=160, seed=5)
    assert any(not np.array_equal(s.image, t.image) for s, t in zip(a, c, strict=True))


@pytest.fixture(scope="module")
def sample() -> Sample:
    s = synthetic_samples(3, size=128, seed=0)
    return max(s, key=lambda x: len(np.unique(x.labels)))


@pytest.mark.parametrize("size", [32, 64])
def test_random_crop_shape_dtype_and_classes(sample, size):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        img, classes = random_crop(sample, size, rng, scale=(0.5, 2.0))
        assert img.shape == classes.shape == (size, size)
        assert img.dtype == np.float32 and classes.dtype == np.uint8
        assert img.flags.c_contiguous and np.isfinite(img).all()
        seen |= set(np.unique(classes).tolist())
    assert seen <= {0, 1, 2} and {0, 1} <= seen


def test_random_crop_is_deterministic_for_a_seeded_generator(sample):
    a = [random_crop(sample, 64, np.random.default_rng(9)) for _ in range(2)]
    np.testing.assert_array_equal(a[0][0], a[1][0])
    np.testing.assert_array_equal(a[0][1], a[1][1])
    rng = np.random.default_rng(9)
    first, second = random_crop(sample, 64, rng), random_crop(sample, 64, rng)
    assert not np.array_equal(first[0], second[0])


def test_random_crop_classes_are_the_targets_of_the_labels():
    """At scale 1 on an image of the crop's size the crop is the whole image: its classes are
    the instance classes of the labels, up to the rot90/flip."""
    lab = np.zeros((64, 64), np.uint32)
    lab[5:20, 5:20], lab[5:20, 20:40], lab[40:60, 10:30] = 1, 2, 3
    s = Sample("x", (lab > 0).astype(np.float32), lab)
    expected = instance_classes(lab)
    dihedral = [np.rot90(e, k) for e in (expected, expected[:, ::-1]) for k in range(4)]
    rng = np.random.default_rng(3)
    for _ in range(6):
        _, classes = random_crop(s, 64, rng, scale=(1.0, 1.0))
        assert any(np.array_equal(classes, d) for d in dihedral)


def test_random_crop_with_a_rim_gives_the_rim_targets():
    lab = np.zeros((64, 64), np.uint32)
    lab[5:35, 5:35], lab[40:60, 10:30] = 1, 2
    s = Sample("x", (lab > 0).astype(np.float32), lab)
    expected = instance_classes(lab, rim=0.4)
    assert not np.array_equal(expected, instance_classes(lab))
    dihedral = [np.rot90(e, k) for e in (expected, expected[:, ::-1]) for k in range(4)]
    rng = np.random.default_rng(3)
    for _ in range(4):
        _, classes = random_crop(s, 64, rng, scale=(1.0, 1.0), rim=0.4)
        assert any(np.array_equal(classes, d) for d in dihedral)


def test_random_crop_pads_a_small_image():
    lab = np.zeros((20, 30), np.uint32)
    lab[5:15, 5:15] = 1
    s = Sample("small", np.random.default_rng(0).random((20, 30), dtype=np.float32), lab)
    img, classes = random_crop(s, 64, np.random.default_rng(0), scale=(1.0, 1.0))
    assert img.shape == classes.shape == (64, 64)
    # the padding is background: at most the one particle's pixels are foreground
    assert 0 < np.count_nonzero(classes) <= 100


def test_binary_masks_label_like_scipy():
    m = _binary_mask()
    expected, _ = ndi.label(m > 0, np.ones((3, 3)))
    np.testing.assert_array_equal(datasets.as_instances(m), expected)


def test_synthetic_samples_with_rafts_keep_the_other_fields():
    plain = synthetic_samples(8, size=160, seed=2)
    mixed = synthetic_samples(8, size=160, seed=2, rafts=0.5)
    same = [np.array_equal(p.labels, m.labels) for p, m in zip(plain, mixed, strict=True)]
    assert 0 < sum(same) < len(same)  # some fields are rafts, the rest unchanged
    for p, m, kept in zip(plain, mixed, same, strict=True):
        if kept:
            np.testing.assert_array_equal(p.image, m.image)
        else:  # a raft: many particles, and touching ones (contact pixels in the targets)
            assert m.labels.max() >= 20
            assert (instance_classes(m.labels) == 2).any()
    with pytest.raises(ConfigError, match="raft"):
        synthetic_samples(1, rafts=1.5)


def test_supported_fields_keep_the_rafts_and_the_other_fields():
    rafts = synthetic_samples(10, size=160, seed=3, rafts=0.3)
    mixed = synthetic_samples(10, size=160, seed=3, rafts=0.3, supported=0.4)
    same = [np.array_equal(r.labels, m.labels) for r, m in zip(rafts, mixed, strict=True)]
    assert 0 < sum(same) < len(same)
    for r, m, kept in zip(rafts, mixed, same, strict=True):
        if kept:  # a raft or a plain field: unchanged by the supported share
            np.testing.assert_array_equal(r.image, m.image)
        else:  # a supported field: labels 1..n, an image of the same kind
            assert m.labels.max() >= 1 and m.image.dtype == np.float32
            assert np.array_equal(np.unique(m.labels), np.arange(m.labels.max() + 1))
    with pytest.raises(ConfigError, match="add up to more than 1"):
        synthetic_samples(1, rafts=0.5, supported=0.7)
