"""The classifier file: one file that can be read without running anything in it.

Layout: a magic line (``MOSAICFLOW-PARTICLE-CLASSIFIER``), one JSON header line, then the
payload. The header holds the format and its version, the classifier's description
(:meth:`ParticleClassifier.header`: versions, features, classes, scores, confusions), the
forest's parameters and tree layout, and the payload's length and SHA-256. The payload is the
trees' numeric arrays, raw (:mod:`mosaicflow.classify.forest_arrays`): reading a file parses
JSON and copies numbers, nothing else, whoever wrote it.

Format version 1 (mosaicflow before this format) stored the forest as a joblib pickle.
Unpickling runs whatever code the file names, and a checksum does not help since whoever
writes the file writes the checksum too, so :func:`load` refuses such a file unless the caller
says it trusts it (``trust_pickle=True``).
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from mosaicflow.classify.forest_arrays import forest_from_payload, forest_to_payload
from mosaicflow.classify.model import ParticleClassifier
from mosaicflow.errors import ClassifierError

FORMAT = "mosaicflow-particle-classifier"
FORMAT_VERSION = 2
"""Version :func:`save` writes: the forest as JSON and raw arrays."""
PICKLE_FORMAT_VERSION = 1
"""The old version whose payload is a joblib pickle: read only with ``trust_pickle=True``."""
MAGIC = b"MOSAICFLOW-PARTICLE-CLASSIFIER\n"

_REQUIRED = ("features", "classes", "payload_bytes", "payload_sha256", "oob_confusion")


def save(classifier: ParticleClassifier, path: str | Path) -> Path:
    """Write ``classifier`` to ``path`` in the current format.

    Parameters
    ----------
    classifier : ParticleClassifier
        Trained by :func:`mosaicflow.classify.train` (any fitted single-output
        ``RandomForestClassifier`` whose trees it made itself).
    path : str or Path
        File to write (any name; the contents identify it). Written to ``<path>.partial``
        first and renamed, so a reader never sees half a file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ClassifierError
        The forest cannot be stored exactly (see
        :func:`mosaicflow.classify.forest_arrays.forest_to_payload`).
    """
    meta, payload = forest_to_payload(
        classifier.forest, len(classifier.features), tuple(classifier.classes)
    )
    head = {"format": FORMAT, "format_version": FORMAT_VERSION, **classifier.header()}
    head["forest"] = meta
    head["payload_bytes"] = len(payload)
    head["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC)
            fh.write(json.dumps(head).encode() + b"\n")
            fh.write(payload)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a classifier file of any version, checked; reads no forest.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    dict
        ``format_version`` 1 is the old pickle-based format (see :func:`load`).

    Raises
    ------
    ClassifierError
        Missing or foreign file, damaged header, a newer format version.
    """
    head, _ = _read(path, payload=False)
    return head


def check_loadable(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """The header of a file :func:`load` would read, refusing what it refuses up front.

    For checking a run's configuration before hours of work: reads the header only.

    Parameters
    ----------
    path : str or Path
        The file.
    trust_pickle : bool, keyword-only
        As for :func:`load`.

    Returns
    -------
    dict
        The header.

    Raises
    ------
    ClassifierError
        As :func:`read_header`, and an old pickle-based file without ``trust_pickle``.
    """
    head = read_header(path)
    if head["format_version"] == PICKLE_FORMAT_VERSION and not trust_pickle:
        raise ClassifierError(_pickle_refusal(path, head))
    return head


def validate_classifier_file(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Check that a run can use the classifier file, reading all of it but running nothing.

    Meant for a run's pre-flight check: a file that passes loads later. A current-format file
    is read whole, as :func:`load` reads it (payload length and checksum, every tree's arrays
    checked and built, header and forest agreeing on features and classes). An old
    pickle-based file is refused, as :func:`load` refuses it, unless ``trust_pickle``; then its
    payload's length and checksum are checked, but the pickle is not run here (that happens
    once, when the run loads it).

    Parameters
    ----------
    path : str or Path
        The file.
    trust_pickle : bool, keyword-only
        As for :func:`load`.

    Returns
    -------
    dict
        The file's header.

    Raises
    ------
    ClassifierError
        Naming the file and what is wrong: missing, foreign, truncated or damaged, a newer
        format version, a forest that disagrees with its header or cannot be rebuilt, an old
        pickle-based file without ``trust_pickle``.
    """
    head = check_loadable(path, trust_pickle=trust_pickle)
    if head["format_version"] == PICKLE_FORMAT_VERSION:
        _read(path, payload=True)
    else:
        load(path)
    return head


def _pickle_refusal(path: str | Path, head: dict[str, Any]) -> str:
    return (
        f"classifier file '{path}' is in the old pickle-based format (format version "
        f"{PICKLE_FORMAT_VERSION}, written by mosaicflow {head.get('mosaicflow_version') or '?'}"
        "): reading it unpickles its forest, which can run any code the file's author put in "
        "it, so it is not read. If you trust where the file came from, allow it with "
        "load(path, trust_pickle=True) (mosaicflow run: --trust-classifier-pickle; run "
        "config: classify.trust_pickle: true), then save it again to convert it to the "
        "current format: load(path, trust_pickle=True).save(new_path); or retrain it"
    )


def _read(path: str | Path, *, payload: bool) -> tuple[dict[str, Any], bytes]:
    """The checked header and, with ``payload``, the payload (length and checksum checked)."""
    path = Path(path)
    where = f"classifier file '{path}'"
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise ClassifierError(f"{where}: not found") from None
    except OSError as exc:
        raise ClassifierError(f"{where}: cannot open ({exc})") from exc
    with fh:
        magic = fh.read(len(MAGIC))
        if magic != MAGIC:
            raise ClassifierError(
                f"{where}: not a mosaicflow particle classifier (it starts with {magic[:16]!r}; "
                "write one with `mosaicflow classify-train` or ParticleClassifier.save)"
            )
        line = fh.readline()
        try:
            head = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ClassifierError(f"{where}: damaged header ({exc})") from exc
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise ClassifierError(f"{where}: damaged header (no format {FORMAT!r})")
        version = head.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ClassifierError(
                f"{where}: format version {version!r}; this mosaicflow reads versions 1 to "
                f"{FORMAT_VERSION} (written by mosaicflow {head.get('mosaicflow_version')})"
            )
        required = _REQUIRED if version == PICKLE_FORMAT_VERSION else (*_REQUIRED, "forest")
        missing = [k for k in required if k not in head]
        if missing:
            raise ClassifierError(f"{where}: damaged header (lacks {missing})")
        if not payload:
            return head, b""
        data = fh.read()
    if len(data) != head["payload_bytes"]:
        raise ClassifierError(
            f"{where}: truncated or damaged (forest payload has {len(data)} bytes, the header "
            f"says {head['payload_bytes']})"
        )
    if hashlib.sha256(data).hexdigest() != head["payload_sha256"]:
        raise ClassifierError(f"{where}: damaged (forest payload checksum does not match)")
    return head, data


def _unpickle_forest(data: bytes, where: str) -> RandomForestClassifier:
    """The forest of a version-1 payload: runs the pickle; only for trusted files."""
    import joblib

    try:
        body = joblib.load(io.BytesIO(data))
        forest = body["forest"]
    except Exception as exc:  # unpickling can fail in many ways; all mean a bad file
        raise ClassifierError(f"{where}: forest payload unreadable ({exc})") from exc
    if not isinstance(forest, RandomForestClassifier):
        raise ClassifierError(f"{where}: payload holds {type(forest).__name__}, not a forest")
    return forest


def load(path: str | Path, *, trust_pickle: bool = False) -> ParticleClassifier:
    """Read a classifier written by :func:`save`.

    Parameters
    ----------
    path : str or Path
        The file.
    trust_pickle : bool, keyword-only
        Also read a file in the old pickle-based format (version 1). Unpickling can run any
        code the file's author chose: pass it only for a file whose origin you trust, and
        save the result again to convert it. A current-format file never runs code.

    Returns
    -------
    ParticleClassifier
        Its forest predicts exactly as the one that was saved.

    Raises
    ------
    ClassifierError
        Missing, foreign, truncated or damaged file, a newer format version, a forest that
        does not match the header's features or classes, a tree layout from another
        scikit-learn version; an old pickle-based file without ``trust_pickle`` (the message
        says how to opt in).

    Notes
    -----
    The header and the payload's checksum are verified before the forest is read. An old
    pickle-based file written under another scikit-learn version loads with scikit-learn's
    ``InconsistentVersionWarning``; the header's ``sklearn_version`` says which one it was.
    """
    head, data = _read(path, payload=True)
    where = f"classifier file '{path}'"
    pickled = head["format_version"] == PICKLE_FORMAT_VERSION
    if pickled and not trust_pickle:
        raise ClassifierError(_pickle_refusal(path, head))
    try:
        classes = tuple(str(c) for c in head["classes"])
        features = tuple(str(f) for f in head["features"])
    except TypeError as exc:
        raise ClassifierError(f"{where}: damaged header ({exc})") from exc
    for name, values in (("classes", classes), ("features", features)):
        if not values or len(set(values)) != len(values):
            raise ClassifierError(f"{where}: damaged header ({name} {list(values)})")
    if pickled:
        forest = _unpickle_forest(data, where)
    else:
        forest = forest_from_payload(
            head["forest"], data, len(features), classes, where, str(head.get("sklearn_version"))
        )
    if tuple(str(c) for c in forest.classes_) != classes or forest.n_features_in_ != len(features):
        raise ClassifierError(f"{where}: header and forest disagree on classes or features")
    try:
        return _from_header(head, forest, features, classes)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ClassifierError(f"{where}: damaged header ({type(exc).__name__}: {exc})") from exc


def _from_header(
    head: dict[str, Any],
    forest: RandomForestClassifier,
    features: tuple[str, ...],
    classes: tuple[str, ...],
) -> ParticleClassifier:
    cv_conf = head.get("cv_confusion")
    return ParticleClassifier(
        forest=forest,
        features=features,
        classes=classes,
        n_train=int(head["n_train"]),
        class_counts={str(k): int(v) for k, v in head["class_counts"].items()},
        oob_score=float(head["oob_score"]),
        oob_balanced_accuracy=float(head["oob_balanced_accuracy"]),
        oob_confusion=np.asarray(head["oob_confusion"], dtype=np.int64),
        cv_folds=head.get("cv_folds"),
        cv_grouped=bool(head.get("cv_grouped", False)),
        cv_fold_scores=tuple(head.get("cv_fold_scores", ())),
        cv_balanced_accuracy=head.get("cv_balanced_accuracy"),
        cv_balanced_accuracy_std=head.get("cv_balanced_accuracy_std"),
        cv_confusion=None if cv_conf is None else np.asarray(cv_conf, dtype=np.int64),
        notes=tuple(head.get("notes", ())),
        mosaicflow_version=str(head.get("mosaicflow_version", "")),
        sklearn_version=str(head.get("sklearn_version", "")),
        created=str(head.get("created", "")),
        token=str(head.get("token") or uuid.uuid4().hex),
    )


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAGIC",
    "PICKLE_FORMAT_VERSION",
    "check_loadable",
    "load",
    "read_header",
    "save",
    "validate_classifier_file",
]
