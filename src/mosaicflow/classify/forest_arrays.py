"""A fitted random forest as JSON and raw numeric arrays, and back, without pickle.

A classifier file must not be able to run code when it is read, so the forest is stored as
what it is made of: the forest's constructor parameters and a few counts (JSON), and the
trees' node and value arrays (raw little-endian numbers whose names, types and shapes are
fixed by this module, not by the file). Reading rebuilds ``DecisionTreeClassifier`` and
``RandomForestClassifier`` objects from those alone.

scikit-learn's ``Tree.__setstate__`` trusts its input: it does not check that child indices
stay inside the tree, that ``node_count`` matches the arrays, or that ``max_depth`` is the
tree's depth (``decision_path`` sizes a buffer by it). A crafted file could otherwise make it
read or write outside its buffers, so every tree is checked first: each internal node's
children come after it and inside its tree, every node but the root has exactly one parent,
split features exist, and the stated depth is the real one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sklearn
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import NODE_DTYPE, Tree

from mosaicflow.errors import ClassifierError

NODE_FIELDS: tuple[str, ...] = tuple(NODE_DTYPE.names)
"""Fields of scikit-learn's tree nodes, each stored as one array over all trees' nodes."""

_LEAF = -1  # scikit-learn's TREE_LEAF: the child index of a leaf
_FLOAT = "<f8"


def _node_dtype(name: str) -> str:
    return NODE_DTYPE.fields[name][0].newbyteorder("<").str


def _plain(value: Any, where: str) -> Any:
    """``value`` if JSON holds it exactly (None, bool, int, float, str, lists, str-keyed dicts)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, where) for k, v in value.items()}
    raise ClassifierError(f"{where}: {type(value).__name__} value {value!r} cannot be stored")


def _tree_template(forest: RandomForestClassifier) -> DecisionTreeClassifier:
    """An unfitted tree as the forest makes them (its seed aside)."""
    tree = clone(forest.estimator_)
    tree.set_params(**{p: getattr(forest, p) for p in forest.estimator_params})
    return tree


def _layout(meta: dict[str, Any], n_classes: int) -> list[dict[str, Any]]:
    """Names, dtypes and shapes of the payload's arrays, in payload order."""
    total = int(sum(meta["node_counts"]))
    layout = [{"name": f, "dtype": _node_dtype(f), "shape": [total]} for f in NODE_FIELDS]
    layout.append({"name": "value", "dtype": _FLOAT, "shape": [total, n_classes]})
    if meta.get("oob_decision_function"):
        layout.append(
            {
                "name": "oob_decision_function",
                "dtype": _FLOAT,
                "shape": [meta["n_samples"], n_classes],
            }
        )
    if meta.get("sample_weight") is True:
        layout.append({"name": "sample_weight", "dtype": _FLOAT, "shape": [meta["n_samples"]]})
    return layout


def forest_to_payload(
    forest: RandomForestClassifier, n_features: int, classes: tuple[str, ...]
) -> tuple[dict[str, Any], bytes]:
    """Describe a fitted forest in JSON and pack its arrays.

    Parameters
    ----------
    forest : RandomForestClassifier
        Fitted, single-output, on ``n_features`` columns, with ``classes``.
    n_features : int
        Columns it was fitted on.
    classes : tuple of str
        Its classes, in its order.

    Returns
    -------
    meta : dict
        JSON-able: constructor parameters, counts, per-tree seeds, node counts and depths,
        and ``arrays``, the payload's layout.
    payload : bytes
        The arrays of ``meta["arrays"]``, raw little-endian, one after the other.

    Raises
    ------
    ClassifierError
        A forest this format cannot hold exactly: not a fitted single-output
        ``RandomForestClassifier``, or trees not made the way the forest makes them.
    """
    where = "save"
    if type(forest) is not RandomForestClassifier or not hasattr(forest, "estimators_"):
        raise ClassifierError(f"{where}: expected a fitted RandomForestClassifier")
    n_classes = len(classes)
    if (
        forest.n_outputs_ != 1
        or forest.n_features_in_ != n_features
        or tuple(str(c) for c in forest.classes_) != tuple(classes)
    ):
        raise ClassifierError(
            f"{where}: the forest does not match the classifier's features or classes"
        )
    template = _tree_template(forest)
    params = template.get_params(deep=False)
    seeds, counts, depths, states = [], [], [], []
    max_features = None
    for est in forest.estimators_:
        seed = est.get_params(deep=False).get("random_state")
        if (
            type(est) is not DecisionTreeClassifier
            or not isinstance(seed, int)
            or est.get_params(deep=False) != {**params, "random_state": seed}
            or est.n_outputs_ != 1
            or not np.array_equal(est.classes_, np.arange(n_classes))
            or (max_features is not None and est.max_features_ != max_features)
        ):
            raise ClassifierError(f"{where}: the forest holds a tree it did not make itself")
        max_features = int(est.max_features_)
        state = est.tree_.__getstate__()
        seeds.append(seed)
        counts.append(int(state["node_count"]))
        depths.append(int(state["max_depth"]))
        states.append(state)
    meta: dict[str, Any] = {
        "params": _plain(forest.get_params(deep=False), f"{where}: forest parameter"),
        "n_samples": int(forest._n_samples),
        "n_samples_bootstrap": _plain(getattr(forest, "_n_samples_bootstrap", None), where),
        "max_features": max_features,
        "tree_seeds": seeds,
        "node_counts": counts,
        "max_depths": depths,
        "oob_score": float(forest.oob_score_) if hasattr(forest, "oob_score_") else None,
        "oob_decision_function": hasattr(forest, "oob_decision_function_"),
        # True: an array in the payload; False: the attribute is None; None: no attribute
        "sample_weight": None
        if not hasattr(forest, "_sample_weight")
        else forest._sample_weight is not None,
    }
    nodes = np.concatenate([s["nodes"] for s in states])
    arrays = {f: nodes[f] for f in NODE_FIELDS}
    arrays["value"] = np.concatenate([s["values"][:, 0, :] for s in states])
    if meta["oob_decision_function"]:
        arrays["oob_decision_function"] = forest.oob_decision_function_
    if meta["sample_weight"]:
        arrays["sample_weight"] = forest._sample_weight
    meta["arrays"] = _layout(meta, n_classes)
    payload = b"".join(
        np.ascontiguousarray(arrays[a["name"]], dtype=np.dtype(a["dtype"])).tobytes()
        for a in meta["arrays"]
    )
    return meta, payload


def _ints(meta: dict[str, Any], key: str, n: int, low: int, where: str) -> np.ndarray:
    """``meta[key]``, checked to be a list of ``n`` integers in ``[low, 2**62)``."""
    values = meta.get(key)
    if (
        not isinstance(values, list)
        or len(values) != n
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and low <= v < 2**62 for v in values
        )
    ):
        raise ClassifierError(f"{where}: damaged header ({key!r} is not {n} integers >= {low})")
    return np.asarray(values, dtype=np.int64)


def _unpack(
    meta: dict[str, Any], payload: bytes, n_classes: int, where: str, written_with: str
) -> dict[str, np.ndarray]:
    """The payload's arrays, after checking the header states the layout this module expects."""
    layout = _layout(meta, n_classes)
    stated = meta.get("arrays")
    names = (
        [a.get("name") for a in stated if isinstance(a, dict)] if isinstance(stated, list) else []
    )
    if names != [a["name"] for a in layout]:
        raise ClassifierError(
            f"{where}: the forest's arrays {names} are not those of this scikit-learn's trees "
            f"({[a['name'] for a in layout]}): the file was written with scikit-learn "
            f"{written_with}, this is {sklearn.__version__}; retrain the classifier with it"
        )
    if stated != layout:
        raise ClassifierError(
            f"{where}: damaged header (the forest's arrays are declared as {stated}; its "
            f"counts, features and classes say {layout})"
        )
    sizes = [np.dtype(a["dtype"]).itemsize * math.prod(a["shape"]) for a in layout]
    if sum(sizes) != len(payload):
        raise ClassifierError(
            f"{where}: damaged (the forest's arrays need {sum(sizes)} bytes, it has {len(payload)})"
        )
    arrays, offset = {}, 0
    for a, size in zip(layout, sizes, strict=True):
        raw = np.frombuffer(
            payload,
            dtype=np.dtype(a["dtype"]),
            count=size // np.dtype(a["dtype"]).itemsize,
            offset=offset,
        )
        arrays[a["name"]] = raw.astype(raw.dtype.newbyteorder("="), copy=True).reshape(a["shape"])
        offset += size
    return arrays


def _check_trees(
    arrays: dict[str, np.ndarray],
    counts: np.ndarray,
    depths: np.ndarray,
    n_features: int,
    where: str,
) -> None:
    """Refuse node arrays that are not proper trees of the stated depth (see module notes)."""
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    total = int(counts.sum())
    tree_of = np.repeat(np.arange(len(counts)), counts)
    start = offsets[tree_of]
    local = np.arange(total) - start
    left, right = arrays["left_child"], arrays["right_child"]
    leaf = left == _LEAF
    inner = ~leaf
    size = counts[tree_of]

    def bad(message: str) -> ClassifierError:
        return ClassifierError(f"{where}: damaged forest ({message})")

    if np.any(leaf != (right == _LEAF)):
        raise bad("a node has one child")
    for child in (left, right):
        if np.any(inner & ((child <= local) | (child >= size))):
            raise bad("a child index points outside its tree or backwards")
    if np.any(inner & (left == right)):
        raise bad("a node's two children are the same")
    feature = arrays["feature"]
    if np.any(inner & ((feature < 0) | (feature >= n_features))):
        raise bad(f"a split on a feature outside 0..{n_features - 1}")
    children = np.concatenate([left[inner] + start[inner], right[inner] + start[inner]])
    parents = np.bincount(children, minlength=total)
    roots = np.zeros(total, dtype=bool)
    roots[offsets] = True
    if np.any(parents != ~roots):
        raise bad("a node has no parent or several")
    depth = np.zeros(total, dtype=np.int64)
    frontier, level = offsets, 0
    while frontier.size:  # children lie after their parents: at most max(counts) levels
        depth[frontier] = level
        frontier = frontier[inner[frontier]]
        frontier = np.concatenate([left[frontier], right[frontier]]) + np.concatenate(
            [start[frontier], start[frontier]]
        )
        level += 1
    if not np.array_equal(np.maximum.reduceat(depth, offsets), depths):
        raise bad("a tree's stated depth is not its depth")


def forest_from_payload(
    meta: dict[str, Any],
    payload: bytes,
    n_features: int,
    classes: tuple[str, ...],
    where: str,
    written_with: str = "?",
) -> RandomForestClassifier:
    """Rebuild the forest :func:`forest_to_payload` described, checking everything first.

    Parameters
    ----------
    meta : dict
        The ``forest`` entry of a file's header (untrusted).
    payload : bytes
        The file's payload (untrusted; its length is checked against ``meta``).
    n_features : int
        Features the classifier reads.
    classes : tuple of str
        Its classes.
    where : str
        The file, for messages.
    written_with : str
        The scikit-learn version that wrote it (from the header), for messages.

    Returns
    -------
    RandomForestClassifier
        Fitted; predicts exactly as the forest that was saved.

    Raises
    ------
    ClassifierError
        A header entry of the wrong type, arrays other than this scikit-learn's tree layout,
        a payload of the wrong size, or trees that are not proper trees (see the module's
        notes).
    """
    if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
        raise ClassifierError(f"{where}: damaged header (no forest parameters)")
    allowed = RandomForestClassifier().get_params(deep=False)
    params = meta["params"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ClassifierError(
            f"{where}: forest parameters {unknown} are not those of scikit-learn "
            f"{sklearn.__version__}'s RandomForestClassifier (the file was written with "
            f"{written_with}): retrain the classifier with this version"
        )
    forest = RandomForestClassifier(**params)
    n_trees = forest.n_estimators
    if isinstance(n_trees, bool) or not isinstance(n_trees, int) or n_trees < 1:
        raise ClassifierError(f"{where}: damaged header (n_estimators {n_trees!r})")
    n_classes = len(classes)
    seeds = _ints(meta, "tree_seeds", n_trees, 0, where)
    counts = _ints(meta, "node_counts", n_trees, 1, where)
    depths = _ints(meta, "max_depths", n_trees, 0, where)
    (max_features,) = _ints({"m": [meta.get("max_features")]}, "m", 1, 1, where)
    (n_samples,) = _ints({"n": [meta.get("n_samples")]}, "n", 1, 1, where)
    n_bootstrap = meta.get("n_samples_bootstrap")
    if n_bootstrap is not None:
        (n_bootstrap,) = _ints({"n": [n_bootstrap]}, "n", 1, 1, where)
        n_bootstrap = int(n_bootstrap)
    if max_features > n_features:
        raise ClassifierError(f"{where}: damaged header (max_features {max_features})")
    arrays = _unpack(meta, payload, n_classes, where, written_with)
    _check_trees(arrays, counts, depths, n_features, where)

    forest._validate_estimator()
    template = _tree_template(forest)
    estimators, start = [], 0
    for seed, count, depth in zip(seeds, counts, depths, strict=True):
        nodes = np.zeros(count, dtype=NODE_DTYPE)
        for f in NODE_FIELDS:
            nodes[f] = arrays[f][start : start + count]
        values = np.ascontiguousarray(arrays["value"][start : start + count, None, :])
        tree_ = Tree(n_features, np.array([n_classes], dtype=np.intp), 1)
        tree_.__setstate__(
            {"max_depth": int(depth), "node_count": int(count), "nodes": nodes, "values": values}
        )
        est = clone(template).set_params(random_state=int(seed))
        est.n_features_in_ = n_features
        est.n_outputs_ = 1
        est.classes_ = np.arange(n_classes, dtype=np.float64)
        est.n_classes_ = np.intp(n_classes)
        est.max_features_ = int(max_features)
        est.tree_ = tree_
        estimators.append(est)
        start += count
    forest.n_features_in_ = n_features
    forest._n_samples = int(n_samples)
    forest.n_outputs_ = 1
    forest.classes_ = np.array(classes, dtype=object)
    forest.n_classes_ = n_classes
    if "sample_weight" in arrays:
        forest._sample_weight = arrays["sample_weight"]
    elif meta.get("sample_weight") is False:  # the forest had the attribute, set to None
        forest._sample_weight = None
    forest._n_samples_bootstrap = n_bootstrap
    forest.estimators_ = estimators
    if "oob_decision_function" in arrays:
        forest.oob_decision_function_ = arrays["oob_decision_function"]
    if meta.get("oob_score") is not None:
        forest.oob_score_ = float(meta["oob_score"])
    return forest


__all__ = ["NODE_FIELDS", "forest_from_payload", "forest_to_payload"]
