"""Particle classification: features, a random forest on the particle table, class fractions.

Modules: ``model`` (the classifier object and its features), ``train``, ``predict``,
``labels`` (training labels from a file), ``fileformat`` (save/load: a file that never runs
code when read) with ``forest_arrays`` (the forest as plain arrays), ``metrics`` (class
fractions and their intervals), ``crops`` (table rows for hand-picked crops).
"""

from __future__ import annotations

from mosaicflow.classify.crops import features_from_crops
from mosaicflow.classify.fileformat import (
    FORMAT_VERSION,
    check_loadable,
    load,
    read_header,
    save,
)
from mosaicflow.classify.labels import labels_from_file
from mosaicflow.classify.metrics import (
    UNCLASSIFIED,
    adjusted_fractions,
    balanced_accuracy_from_confusion,
    class_fractions,
    wilson_interval,
)
from mosaicflow.classify.model import (
    DEFAULT_FEATURES,
    DERIVED_FEATURES,
    HU_COLUMNS,
    SHAPE_FEATURES,
    ParticleClassifier,
    add_derived_features,
    feret_ratio,
)
from mosaicflow.classify.predict import output_columns, predict
from mosaicflow.classify.train import train
from mosaicflow.errors import ClassifierError
from mosaicflow.measure.features import (
    FOURIER_COLUMNS,
    GROSCHNER_FEATURES,
    fourier_features,
    radial_profile,
)

__all__ = [
    "DEFAULT_FEATURES",
    "DERIVED_FEATURES",
    "FORMAT_VERSION",
    "FOURIER_COLUMNS",
    "GROSCHNER_FEATURES",
    "HU_COLUMNS",
    "SHAPE_FEATURES",
    "UNCLASSIFIED",
    "ClassifierError",
    "ParticleClassifier",
    "add_derived_features",
    "adjusted_fractions",
    "balanced_accuracy_from_confusion",
    "check_loadable",
    "class_fractions",
    "features_from_crops",
    "feret_ratio",
    "fourier_features",
    "labels_from_file",
    "load",
    "output_columns",
    "predict",
    "radial_profile",
    "read_header",
    "save",
    "train",
    "wilson_interval",
]
