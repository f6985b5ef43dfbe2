"""Particle classification: features, a random forest on the particle table, class fractions."""

from __future__ import annotations

from mosaicflow.classify.crops import features_from_crops
from mosaicflow.classify.features import FOURIER_COLUMNS, fourier_features, radial_profile
from mosaicflow.classify.forest import (
    DEFAULT_FEATURES,
    SHAPE_FEATURES,
    ClassifierError,
    ParticleClassifier,
    add_derived_features,
    feret_ratio,
    labels_from_file,
    load,
    predict,
    read_header,
    train,
)
from mosaicflow.classify.metrics import (
    UNCLASSIFIED,
    adjusted_fractions,
    balanced_accuracy_from_confusion,
    class_fractions,
    wilson_interval,
)

__all__ = [
    "DEFAULT_FEATURES",
    "FOURIER_COLUMNS",
    "SHAPE_FEATURES",
    "UNCLASSIFIED",
    "ClassifierError",
    "ParticleClassifier",
    "add_derived_features",
    "adjusted_fractions",
    "balanced_accuracy_from_confusion",
    "class_fractions",
    "features_from_crops",
    "feret_ratio",
    "fourier_features",
    "labels_from_file",
    "load",
    "predict",
    "radial_profile",
    "read_header",
    "train",
    "wilson_interval",
]
