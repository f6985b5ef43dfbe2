"""BPartIS (Yildirim & Cole, J. Chem. Inf. Model. 2021) as a peer: the particle instance
segmenter of ``imagedataextractor`` 2.0.4, run from its unpacked wheel on the CPU.

    benchmarks/peers/fetch_bpartis.sh            # once: unpacks the wheel in /work/scratch/peers
    labels = BPartIS()(image)                    # uint32 instance labels, 0 = background

Only the wheel's ``imagedataextractor/segment/`` package is imported, under a private name, so
the package ``__init__`` (which imports ``extract`` and with it chemdataextractor, pytesseract,
OpenCV's EAST text detector) never runs. Its own code does the work: the network
(``nnmodules.BranchedERFNet(num_classes=[4, 1])``, an ERFNet encoder with a 4-channel
embedding/sigma decoder and a 1-channel seed decoder), ``model.ParticleSegmenter.segment``
(``preprocess``: PIL bicubic resize to 512 x 512, ``/ 255``, no mean/std normalisation; the
network; ``cluster.Cluster(n_sigma=2).cluster``, the SpatialEmbeddings clustering: seed map
> 0.5, greedy seeds by score, Gaussian margin > 0.5, clusters and remainders under 129 px
dropped; ``postprocess_pred``: PIL nearest resize of the labels back to the input size) and,
with ``bayesian=True``, ``monte_carlo_predict`` + ``uncertainty.uncertainty_filtering``.

What differs from ``imagedataextractor.extract`` (the package's own entry point):

- ``ParticleSegmenter.__init__`` is not run (it unpickles with ``torch.load`` defaults): the
  object is built with the same attributes and ``seg-model.pt`` is read with
  ``torch.load(..., weights_only=True)``. The state dict is the same.
- The default here is the single deterministic pass (``ParticleSegmenter(bayesian=False)``,
  dropout off). ``extract`` defaults to ``bayesian=True``: 30 Monte Carlo dropout passes,
  clustering of their mean output, then particles whose mean epistemic uncertainty is
  ``>= 0.0125`` are dropped. ``BPartIS(bayesian=True)`` runs that path unchanged (its dropout
  masks are random: seeded here by ``seed`` for repeatability).
- ``extract`` first splits figure panels (``figsplit``) and feeds ``np.array(PIL image)``; a
  one-channel (mode ``L``) image would fail there (``preprocess`` needs three channels). Here the
  caller's image is segmented whole (no panel splitting), a 2-D image is repeated into three
  identical channels, and a non-uint8 image is stretched min..max onto 0..255 (the network was
  trained on 8-bit figure pixels). For an RGB file with identical channels (all of EMPS) the
  network input is bit-identical to ``extract``'s.
- ``extract`` renumbers the particles at random (``shuffle_segmap``): not done (ids are
  arbitrary either way).
- Inference runs under ``torch.no_grad()`` (the package builds and discards the autograd graph):
  the outputs are the same.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

DEFAULT = Path(
    os.environ.get("MOSAICFLOW_BPARTIS_ROOT", "/work/scratch/peers/imagedataextractor-2.0.4")
)
SEGMENT = Path("imagedataextractor") / "segment"
WEIGHTS = Path("imagedataextractor") / "models" / "seg-model.pt"
FETCH = Path(__file__).resolve().parent / "fetch_bpartis.sh"
_PACKAGE = "_bpartis_segment"


class BPartISMissing(FileNotFoundError):
    """The unpacked wheel is not where it was looked for."""


def check_root(root: Path | str = DEFAULT) -> Path:
    """The unpacked wheel's root; raises :class:`BPartISMissing` naming the fetch script."""
    root = Path(root)
    for rel in (SEGMENT / "model.py", WEIGHTS):
        if not (root / rel).is_file():
            raise BPartISMissing(
                f"BPartIS: {root / rel} not found; unpack the imagedataextractor 2.0.4 wheel with "
                f"{FETCH} [DIR] (the root is DIR/imagedataextractor-2.0.4)"
            )
    return root


def load_segment_package(root: Path | str = DEFAULT) -> ModuleType:
    """``imagedataextractor/segment/`` imported as the package ``_bpartis_segment`` (its
    relative imports resolve inside it; the parent package is never imported)."""
    root = check_root(root)
    if _PACKAGE in sys.modules:
        loaded = Path(sys.modules[_PACKAGE].__file__).parent
        if loaded != (root / SEGMENT).resolve():
            raise RuntimeError(f"BPartIS: already loaded from {loaded}, not {root / SEGMENT}")
        return sys.modules[_PACKAGE]
    folder = (root / SEGMENT).resolve()
    spec = importlib.util.spec_from_file_location(
        _PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_PACKAGE]
        raise
    return module


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8 for ``ParticleSegmenter.preprocess``: 2-D repeated into 3 channels,
    extra channels (alpha) dropped, non-uint8 stretched min..max onto 0..255."""
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[..., :3] if a.shape[2] >= 3 else a[..., :1]
    elif a.ndim != 2:
        raise ValueError(f"BPartIS: image must be 2-D or (h, w, c), got shape {a.shape}")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        lo, hi = float(f.min()), float(f.max())
        f = (f - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)
        a = np.rint(f).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


class BPartIS:
    """BPartIS instance segmentation of one image, by the wheel's ``ParticleSegmenter``.

    Parameters
    ----------
    root
        The unpacked wheel (``DIR/imagedataextractor-2.0.4``; ``$MOSAICFLOW_BPARTIS_ROOT``
        overrides the default).
    bayesian, n_samples, tu
        ``ParticleSegmenter``'s options; ``bayesian=False`` (default) is the single pass,
        ``bayesian=True, n_samples=30, tu=0.0125`` what ``imagedataextractor.extract`` runs.
    seed
        Seeds torch before each Monte Carlo prediction (``bayesian=True`` only).
    """

    def __init__(
        self,
        root: Path | str = DEFAULT,
        *,
        bayesian: bool = False,
        n_samples: int = 30,
        tu: float = 0.0125,
        seed: int = 0,
    ) -> None:
        import torch

        self.root = check_root(root)
        package = load_segment_package(self.root)
        model = importlib.import_module(f"{_PACKAGE}.model")
        seg = model.ParticleSegmenter.__new__(model.ParticleSegmenter)
        # ParticleSegmenter.__init__ less its torch.load call (no unpickling of code)
        seg.bayesian = bayesian
        seg.n_samples = n_samples
        seg.tu = tu
        seg.device = "cpu"
        seg.seg_model = model.BranchedERFNet(num_classes=[4, 1]).to("cpu").eval()
        seg.model_path = str(self.root / WEIGHTS)
        state = torch.load(seg.model_path, map_location="cpu", weights_only=True)
        seg.seg_model.load_state_dict(state)
        seg.cluster = model.Cluster(n_sigma=2, device="cpu")
        self.segmenter = seg
        self.package = package
        self.seed = seed

    @property
    def settings(self) -> dict[str, object]:
        s = self.segmenter
        return {
            "root": str(self.root),
            "bayesian": s.bayesian,
            "n_samples": s.n_samples if s.bayesian else 1,
            "tu": s.tu if s.bayesian else None,
            "input_size": 512,
        }

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint32 instance labels (0 = background) at ``image``'s own height and width."""
        import torch

        rgb = to_rgb8(image)
        if self.segmenter.bayesian:
            torch.manual_seed(self.seed)
        with torch.no_grad():
            pred, _, _ = self.segmenter.segment(rgb)
        pred = np.asarray(pred)
        if pred.shape != rgb.shape[:2]:
            raise RuntimeError(f"BPartIS: labels {pred.shape} for an image {rgb.shape[:2]}")
        return pred.astype(np.uint32)
