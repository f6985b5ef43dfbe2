"""mosaicflow.classify.fileformat: the classifier file, and that reading one never runs code."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mosaicflow.classify import (
    DEFAULT_FEATURES,
    FORMAT_VERSION,
    ClassifierError,
    ParticleClassifier,
    add_derived_features,
    check_loadable,
    load,
    predict,
    read_header,
)
from mosaicflow.classify.fileformat import MAGIC, PICKLE_FORMAT_VERSION


def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    """Header and payload of a classifier file (parsed here independently of the module)."""
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    line, payload = data[len(MAGIC) :].split(b"\n", 1)
    return json.loads(line), payload


def _write(path: Path, head: dict[str, Any], payload: bytes) -> Path:
    """A classifier file with a valid length and checksum, whatever the payload holds: what
    anyone can write, since the checksum is no signature."""
    head = {**head, "payload_bytes": len(payload)}
    head["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    path.write_bytes(MAGIC + json.dumps(head).encode() + b"\n" + payload)
    return path


def _arrays(head: dict[str, Any], payload: bytes) -> dict[str, np.ndarray]:
    out, offset = {}, 0
    for a in head["forest"]["arrays"]:
        dtype = np.dtype(a["dtype"])
        count = int(np.prod(a["shape"]))
        out[a["name"]] = np.frombuffer(payload, dtype, count, offset).reshape(a["shape"]).copy()
        offset += count * dtype.itemsize
    return out


def _pack(head: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    return b"".join(
        np.ascontiguousarray(arrays[a["name"]], dtype=a["dtype"]).tobytes()
        for a in head["forest"]["arrays"]
    )


def _write_old_format(path: Path, clf: ParticleClassifier, payload: bytes | None = None) -> Path:
    """A version-1 file as mosaicflow wrote it before: the forest pickled by joblib."""
    import joblib

    if payload is None:
        buf = io.BytesIO()
        joblib.dump({"forest": clf.forest}, buf)
        payload = buf.getvalue()
    head = {
        "format": "mosaicflow-particle-classifier",
        "format_version": PICKLE_FORMAT_VERSION,
        **clf.header(),
    }
    return _write(path, head, payload)


class _RunsCode:
    """Unpickling this calls ``Path.touch(sentinel)``: stands for any code an attacker picks."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (Path.touch, (self.sentinel,))


def _same_estimator(a: Any, b: Any, where: str = "forest") -> None:
    """Every attribute equal, in value and type; trees by their arrays."""
    assert type(a) is type(b), where
    assert vars(a).keys() == vars(b).keys(), (where, set(vars(a)) ^ set(vars(b)))
    for key, x in vars(a).items():
        y = getattr(b, key)
        if key == "tree_":
            sa, sb = x.__getstate__(), y.__getstate__()
            assert (sa["max_depth"], sa["node_count"]) == (sb["max_depth"], sb["node_count"])
            np.testing.assert_array_equal(sa["nodes"], sb["nodes"])
            np.testing.assert_array_equal(sa["values"], sb["values"])
        elif key == "estimators_":
            assert len(x) == len(y)
            for i, (ea, eb) in enumerate(zip(x, y, strict=True)):
                _same_estimator(ea, eb, f"{where}.estimators_[{i}]")
        elif hasattr(x, "get_params"):
            assert type(x) is type(y) and x.get_params() == y.get_params(), (where, key)
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, (where, key)
            np.testing.assert_array_equal(x, y, err_msg=f"{where}.{key}")
        else:
            assert type(x) is type(y) and x == y, (where, key, x, y)


# --------------------------------------------------------------------------- round trip


def test_save_load_round_trip(model, shapes, tmp_path, shape_names):
    path = model.save(tmp_path / "model.clf")
    head = read_header(path)
    assert head["classes"] == list(shape_names) and head["features"] == list(DEFAULT_FEATURES)
    assert head["n_train"] == 120 and head["cv_folds"] == 3
    assert head["format_version"] == FORMAT_VERSION
    loaded = load(path)
    assert loaded.header() == model.header()
    np.testing.assert_array_equal(loaded.cv_confusion, model.cv_confusion)
    pd.testing.assert_frame_equal(predict(shapes, loaded), predict(shapes, model))
    assert not list(tmp_path.glob("*.partial"))


def test_loaded_forest_is_the_saved_forest(model, shapes, tmp_path):
    """Not just the same predictions: the same fitted object, attribute for attribute."""
    loaded = load(model.save(tmp_path / "model.clf"))
    _same_estimator(loaded.forest, model.forest)
    x = add_derived_features(shapes, model.features)[list(model.features)].to_numpy()
    np.testing.assert_array_equal(loaded.forest.predict_proba(x), model.forest.predict_proba(x))
    np.testing.assert_array_equal(
        loaded.forest.feature_importances_, model.forest.feature_importances_
    )
    np.testing.assert_array_equal(
        loaded.forest.decision_path(x)[0].toarray(), model.forest.decision_path(x)[0].toarray()
    )
    for a, b in zip(
        loaded.forest.estimators_samples_, model.forest.estimators_samples_, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_series_equal(loaded.feature_importances(), model.feature_importances())


def test_load_never_unpickles(model, tmp_path, monkeypatch):
    path = model.save(tmp_path / "model.clf")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a current-format file was unpickled")

    import joblib

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(joblib, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)
    assert load(path).classes == model.classes


def test_load_rejects_bad_files(model, tmp_path):
    import joblib

    good = model.save(tmp_path / "good.joblib").read_bytes()
    with pytest.raises(ClassifierError, match="not found"):
        load(tmp_path / "missing.joblib")
    foreign = tmp_path / "foreign.joblib"
    joblib.dump({"forest": model.forest}, foreign)
    with pytest.raises(ClassifierError, match="not a mosaicflow particle classifier"):
        load(foreign)
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes(good[: len(good) - 1000])
    with pytest.raises(ClassifierError, match="truncated or damaged"):
        load(truncated)
    flipped = bytearray(good)
    flipped[-500] ^= 0xFF
    (tmp_path / "flipped.joblib").write_bytes(bytes(flipped))
    with pytest.raises(ClassifierError, match="checksum"):
        load(tmp_path / "flipped.joblib")
    version = f'"format_version": {FORMAT_VERSION}'.encode()
    future = good.replace(version, b'"format_version": 99', 1)
    (tmp_path / "future.joblib").write_bytes(future)
    with pytest.raises(ClassifierError, match="format version 99"):
        load(tmp_path / "future.joblib")
    lines = good.split(b"\n", 2)
    (tmp_path / "header.joblib").write_bytes(lines[0] + b"\n{not json\n" + lines[2])
    with pytest.raises(ClassifierError, match="damaged header"):
        load(tmp_path / "header.joblib")


def test_load_rejects_a_header_that_disagrees(model, tmp_path):
    path = model.save(tmp_path / "model.clf")
    head, payload = _split(path)
    fewer = _write(tmp_path / "fewer.clf", {**head, "features": head["features"][:-1]}, payload)
    with pytest.raises(
        ClassifierError, match=r"damaged forest \(a split on a feature outside 0\.\.18\)"
    ):
        load(fewer)
    more = {**head, "classes": [*head["classes"], "rod"]}
    with pytest.raises(ClassifierError, match=r"damaged header \(the forest's arrays are declared"):
        load(_write(tmp_path / "more.clf", more, payload))
    typo = {**head, "n_train": "many"}
    with pytest.raises(ClassifierError, match="damaged header"):
        load(_write(tmp_path / "typo.clf", typo, payload))
    del head["forest"]
    with pytest.raises(ClassifierError, match=r"damaged header \(lacks \['forest'\]\)"):
        load(_write(tmp_path / "noforest.clf", head, payload))


def test_load_names_a_tree_layout_from_another_sklearn(model, tmp_path):
    head, payload = _split(model.save(tmp_path / "model.clf"))
    other = json.loads(json.dumps(head))
    other["sklearn_version"] = "0.99"
    other["forest"]["arrays"] = [
        a for a in other["forest"]["arrays"] if a["name"] != "missing_go_to_left"
    ]
    with pytest.raises(ClassifierError, match=r"written with scikit-learn 0\.99.*retrain"):
        load(_write(tmp_path / "other.clf", other, payload))
    other = json.loads(json.dumps(head))
    other["forest"]["params"]["splitting_rule"] = "new"
    with pytest.raises(ClassifierError, match=r"\['splitting_rule'\].*retrain"):
        load(_write(tmp_path / "param.clf", other, payload))


def test_save_refuses_a_forest_it_cannot_hold_exactly(model, tmp_path):
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.tree import ExtraTreeClassifier

    x = np.random.default_rng(0).normal(size=(30, len(model.features)))
    y = np.array(model.classes * 10, dtype=object)
    other = ExtraTreesClassifier(n_estimators=3, random_state=0).fit(x, y)
    with pytest.raises(ClassifierError, match="expected a fitted RandomForestClassifier"):
        ParticleClassifier(**{**vars(model), "forest": other}).save(tmp_path / "x.clf")
    import copy

    odd = copy.copy(model.forest)
    odd.estimators_ = [*odd.estimators_[:-1], ExtraTreeClassifier().fit(x, y)]
    with pytest.raises(ClassifierError, match="did not make itself"):
        ParticleClassifier(**{**vars(model), "forest": odd}).save(tmp_path / "x.clf")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- never runs code


def test_old_pickle_file_is_refused_without_running_its_code(model, tmp_path):
    """A version-1 file whose pickle would run code: refused, and the code does not run,
    although its header and checksum are valid. With trust_pickle it would run: the payload
    is real."""
    sentinel = tmp_path / "SENTINEL"
    evil = _write_old_format(tmp_path / "evil.joblib", model, pickle.dumps(_RunsCode(sentinel)))
    assert read_header(evil)["format_version"] == PICKLE_FORMAT_VERSION  # reading it is safe
    with pytest.raises(ClassifierError, match="pickle-based") as err:
        load(evil)
    assert "trust_pickle=True" in str(err.value) and "run any code" in str(err.value)
    with pytest.raises(ClassifierError, match="pickle-based"):
        check_loadable(evil)
    with pytest.raises(ClassifierError, match="pickle-based"):
        ParticleClassifier.load(evil)
    assert not sentinel.exists()
    # The control: trusting the file does run the payload (then fails: it is no forest).
    with pytest.raises(ClassifierError, match=r"unreadable|not a forest"):
        load(evil, trust_pickle=True)
    assert sentinel.exists()


def test_pickle_smuggled_into_the_current_format_is_never_run(model, tmp_path):
    """A current-format header with a pickle for payload, or with arrays declared as objects:
    refused without running anything, whatever the checksum says."""
    sentinel = tmp_path / "SENTINEL"
    head, payload = _split(model.save(tmp_path / "model.clf"))
    smuggled = pickle.dumps(_RunsCode(sentinel))
    for trust in (False, True):
        with pytest.raises(ClassifierError, match="damaged"):
            load(_write(tmp_path / "pickle.clf", head, smuggled), trust_pickle=trust)
    objects = json.loads(json.dumps(head))
    objects["forest"]["arrays"][0]["dtype"] = "|O"
    buf = io.BytesIO()
    np.save(buf, np.array([_RunsCode(sentinel)], dtype=object), allow_pickle=True)
    with pytest.raises(ClassifierError, match="damaged header"):
        load(_write(tmp_path / "objects.clf", objects, buf.getvalue() + payload))
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        ("child_out_of_tree", "outside its tree or backwards"),
        ("child_backwards", "outside its tree or backwards"),
        ("shared_child", "no parent or several"),
        ("one_child", "one child"),
        ("feature_out_of_range", "feature outside"),
        ("depth_understated", "stated depth"),
        ("node_count_inflated", r"damaged \(the forest's arrays need"),
    ],
)
def test_crafted_trees_are_refused(model, tmp_path, damage, message):
    """Arrays scikit-learn would trust blindly (reading or writing outside its buffers) are
    refused before any tree is built."""
    head, payload = _split(model.save(tmp_path / "model.clf"))
    head = json.loads(json.dumps(head))
    arrays = _arrays(head, payload)
    left, right = arrays["left_child"], arrays["right_child"]
    inner = np.flatnonzero(left != -1)
    first_tree = head["forest"]["node_counts"][0]
    if damage == "child_out_of_tree":
        left[inner[0]] = first_tree + 5  # a node of the next tree, or past the end
    elif damage == "child_backwards":
        right[inner[1]] = 0  # a cycle back to the root
    elif damage == "shared_child":  # a DAG: the root's right child also under node 1
        assert inner[:2].tolist() == [0, 1]
        left[1] = right[0]
    elif damage == "one_child":
        right[inner[0]] = -1
    elif damage == "feature_out_of_range":
        arrays["feature"][inner[0]] = len(model.features)
    elif damage == "depth_understated":
        head["forest"]["max_depths"][0] -= 1  # decision_path sizes its buffer by it
    elif damage == "node_count_inflated":  # Tree.__setstate__ would believe it
        head["forest"]["node_counts"][0] += 1000
        for a in head["forest"]["arrays"]:
            if a["name"] != "oob_decision_function" and a["name"] != "sample_weight":
                a["shape"][0] += 1000
    with pytest.raises(ClassifierError, match=message):
        load(_write(tmp_path / "crafted.clf", head, _pack(head, arrays)))


# --------------------------------------------------------------------------- old format


def test_trusted_old_pickle_file_still_loads_and_converts(model, shapes, tmp_path):
    old = _write_old_format(tmp_path / "old.joblib", model)
    with pytest.raises(ClassifierError, match="pickle-based"):
        load(old)
    trusted = load(old, trust_pickle=True)
    assert trusted.header() == model.header()
    pd.testing.assert_frame_equal(predict(shapes, trusted), predict(shapes, model))
    assert check_loadable(old, trust_pickle=True)["format_version"] == PICKLE_FORMAT_VERSION
    new = trusted.save(tmp_path / "new.clf")
    assert read_header(new)["format_version"] == FORMAT_VERSION
    pd.testing.assert_frame_equal(predict(shapes, load(new)), predict(shapes, model))


# --------------------------------------------------------------------------- pre-flight check


def test_validate_reads_the_whole_file_that_the_header_check_passes(model, tmp_path):
    """A truncated or crafted file passes the header check (the old pre-flight) but not the
    full validation, which names the file; a sound file passes both."""
    from mosaicflow.classify.fileformat import validate_classifier_file

    path = model.save(tmp_path / "model.clf")
    assert validate_classifier_file(path) == read_header(path)
    good = path.read_bytes()
    truncated = tmp_path / "truncated.clf"
    truncated.write_bytes(good[: len(good) - 1000])
    check_loadable(truncated)  # the header alone looks fine
    with pytest.raises(ClassifierError, match=r"'.*truncated\.clf': truncated or damaged"):
        validate_classifier_file(truncated)
    head, payload = _split(path)
    head = json.loads(json.dumps(head))
    arrays = _arrays(head, payload)
    arrays["feature"][np.flatnonzero(arrays["left_child"] != -1)[0]] = len(model.features)
    crafted = _write(tmp_path / "crafted.clf", head, _pack(head, arrays))
    check_loadable(crafted)
    with pytest.raises(ClassifierError, match=r"crafted\.clf.*feature outside"):
        validate_classifier_file(crafted)
    with pytest.raises(ClassifierError, match=r"missing\.clf'?: not found"):
        validate_classifier_file(tmp_path / "missing.clf")


def test_validate_never_runs_a_pickle(model, tmp_path):
    from mosaicflow.classify.fileformat import validate_classifier_file

    sentinel = tmp_path / "SENTINEL"
    evil = _write_old_format(tmp_path / "evil.joblib", model, pickle.dumps(_RunsCode(sentinel)))
    with pytest.raises(ClassifierError, match="pickle-based"):
        validate_classifier_file(evil)
    # trusted: length and checksum are checked, the pickle is left for the run to load
    assert validate_classifier_file(evil, trust_pickle=True)["format_version"] == 1
    assert not sentinel.exists()
    data = evil.read_bytes()
    (tmp_path / "cut.joblib").write_bytes(data[:-3])
    with pytest.raises(ClassifierError, match=r"cut\.joblib': truncated or damaged"):
        validate_classifier_file(tmp_path / "cut.joblib", trust_pickle=True)
    assert not sentinel.exists()
