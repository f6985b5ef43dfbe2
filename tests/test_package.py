"""Import hygiene: the package imports without GPU packages, torch or a cluster, and exports
its front doors."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _fresh_python(code: str) -> str:
    """Run ``code`` in a new interpreter (nothing imported yet); its standard output."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_needs_no_gpu_torch_or_cluster():
    # cupy/cucim made unimportable: the import must not even try them.
    code = (
        "import sys\n"
        "for m in ('cupy', 'cucim', 'cupyx', 'dask_cuda'):\n"
        "    sys.modules[m] = None\n"
        "import mosaicflow, mosaicflow.pipeline, mosaicflow.measure, mosaicflow.restoration\n"
        "import mosaicflow.stitch, mosaicflow.segmentation, mosaicflow.cli\n"
        "bad = [m for m in ('torch', 'cupy', 'cucim', 'distributed') if sys.modules.get(m)]\n"
        "assert not bad, bad\n"
        "print(mosaicflow.__version__)\n"
    )
    assert _fresh_python(code)


def test_command_line_import_leaves_out_plotting_and_learning_packages():
    # Every local Dask worker process imports the command line's main module when it starts
    # (multiprocessing's spawn): scikit-learn, Matplotlib and PyTorch would add about a second
    # to each worker's start.
    code = (
        "import sys\n"
        "import mosaicflow.cli\n"
        "heavy = ('sklearn', 'matplotlib', 'torch')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert _fresh_python(code) == "[]"


def test_package_and_configuration_import_leave_out_dask_xarray_and_zarr():
    # `import mosaicflow` (and a Config built and checked) does not load the array stack (about
    # 2.5 s here): the package's front doors are imported when first asked for.
    code = (
        "import sys\n"
        "import mosaicflow\n"
        "from mosaicflow.config import Config\n"
        "Config().replace('input', value='grid')\n"
        "heavy = ('dask.array', 'xarray', 'zarr', 'distributed', 'mosaicflow.io.store')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert _fresh_python(code) == "[]"


def test_every_commands_help_leaves_out_the_array_stack():
    # `mosaicflow --help`, `mosaicflow run --help` and a mistyped option answer in well under a
    # second: building the parser reads the scenarios and the synthetic defaults without
    # loading the benchmark's run, the renderers, pandas, Dask or Zarr (about 3 s here).
    code = (
        "import sys\n"
        "from mosaicflow.cli import main\n"
        "for command in ([], ['run'], ['stitch'], ['synth'], ['classify-train'], ['bench'],\n"
        "                ['train'], ['evaluate']):\n"
        "    try:\n"
        "        main([*command, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('pandas', 'dask', 'xarray', 'zarr', 'tifffile', 'distributed', 'torch')\n"
        "print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]"
    assert "usage: mosaicflow" in out.stdout


@pytest.mark.parametrize("package", ["mosaicflow.synth", "mosaicflow.bench"])
def test_lazy_packages_resolve_every_public_name(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        module.nothing  # noqa: B018


def test_workers_truth_matching_import_leaves_out_plotting_and_learning_packages():
    # The truth matching's tasks carry functions of mosaicflow.report.matching to the workers:
    # importing it must not load the report's figures (Matplotlib) or the classifier
    # (scikit-learn) there, and the package's public names still resolve.
    code = (
        "import sys\n"
        "import mosaicflow.report.matching\n"
        "heavy = ('sklearn', 'matplotlib', 'mosaicflow.report.writer', 'mosaicflow.classify')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert _fresh_python(code) == "[]"
    import mosaicflow.report as report

    assert all(getattr(report, name) is not None for name in report.__all__)
    assert dir(report) == sorted(report.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        report.nothing  # noqa: B018


def test_stage_modules_the_workers_import_leave_out_dask_dataframe():
    # A local cluster's workers are forked before the stages' modules are imported, so each
    # worker imports the modules its first tasks come from (stitching, restoration,
    # labelling, measuring). Only the driver assembles the particle table with
    # dask.dataframe: importing it there too cost each worker about a third of a second of
    # its first task, on two cores up to a second (docs/PERFORMANCE.md).
    code = (
        "import sys\n"
        "import mosaicflow.stitch, mosaicflow.restoration, mosaicflow.measure\n"
        "import mosaicflow.segmentation.threshold, mosaicflow.report.matching\n"
        "heavy = ('dask.dataframe', 'matplotlib', 'sklearn', 'torch')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    assert _fresh_python(code) == "[]"


def test_the_background_imports_leave_the_stages_nothing_to_import():
    # The driver's main thread builds each stage's graph while the workers wait: what the
    # stages import there (xarray's duck-array packages at the first indexed DataArray, the
    # particle table's dask.dataframe, the report's Matplotlib) is loaded in the background
    # while the first stages run.
    code = (
        "import sys, threading\n"
        "from mosaicflow._shared.workers import IMPORT_THREAD\n"
        "from mosaicflow.pipeline import BACKGROUND_IMPORTS, _import_in_background\n"
        "_import_in_background(*BACKGROUND_IMPORTS)\n"
        "[t.join() for t in threading.enumerate() if t.name == IMPORT_THREAD]\n"
        "before = set(sys.modules)\n"
        "import numpy as np, xarray as xr\n"
        "xr.DataArray(np.zeros(2), coords={'y': [0.5, 1.5]}, dims='y')\n"
        "import dask.dataframe, pyarrow.parquet\n"
        "import mosaicflow.measure, mosaicflow.segmentation, mosaicflow.report.writer\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    assert _fresh_python(code) == "[]"


def test_pipeline_and_run_store_are_exported():
    import mosaicflow
    from mosaicflow.io.store import RunStore, open_run
    from mosaicflow.pipeline import Pipeline

    assert mosaicflow.Pipeline is Pipeline and mosaicflow.RunStore is RunStore
    assert mosaicflow.open_run is open_run
    assert {"Pipeline", "RunStore", "open_run"} <= set(mosaicflow.__all__)
