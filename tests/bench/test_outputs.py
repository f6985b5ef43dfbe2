"""The benchmark's folder rules and its choice among repeats: only a folder it made (or an empty
one) is written into; the median run is reported."""

from __future__ import annotations

import pytest

from mosaicflow.bench import outputs, scenarios
from mosaicflow.bench.suite import _median_index
from mosaicflow.errors import ConfigError, StoreError


def test_prepare_out_creates_adopts_and_refuses(tmp_path):
    made = outputs.prepare_out(tmp_path / "new" / "bench")
    assert (made / outputs.MARKER).is_file()
    assert outputs.prepare_out(made) == made  # its own folder again
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (outputs.prepare_out(empty) / outputs.MARKER).is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        outputs.prepare_out(tmp_path / "file")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"did not make.*notes\.txt"):
        outputs.prepare_out(user)
    assert [p.name for p in user.iterdir()] == ["notes.txt"]


def test_grid_folder_states(tmp_path):
    tiny = scenarios.get("tiny")
    folder, state = scenarios.check_folder(tiny, tmp_path)
    assert folder == tmp_path.resolve() / "tiny" and state == "empty"
    folder.mkdir()
    (folder / scenarios.MARKER).write_text('{"complete": false}')
    assert scenarios.check_folder(tiny, tmp_path)[1] == "stale"
    with pytest.raises(ConfigError, match="maps-48, maps-120, maps-1200"):
        scenarios.get("maps-4800")


@pytest.mark.parametrize(
    ("values", "index"),
    [([3.0], 0), ([5.0, 1.0, 3.0], 2), ([4.0, 2.0], 1), ([9.0, 1.0, 5.0, 7.0], 2)],
)
def test_the_median_run_is_reported(values, index):
    assert _median_index(values) == index


def test_bytecode_info_counts_the_modules_without_cached_bytecode(tmp_path):
    """What each process of a run compiles: modules whose bytecode is not cached (or older
    than their source); bench.md names them."""
    import py_compile

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.py").write_text(f"X = {name!r}\n")
    py_compile.compile(str(tmp_path / "a.py"), doraise=True)
    found = outputs.bytecode_info(tmp_path)
    assert (found["modules"], found["without_cached_bytecode"]) == (3, 2)
    assert "2 of 3 mosaicflow modules" in outputs._bytecode_line(found)[0]
    for name in ("b", "c"):
        py_compile.compile(str(tmp_path / f"{name}.py"), doraise=True)
    assert outputs.bytecode_info(tmp_path)["without_cached_bytecode"] == 0
    assert outputs._bytecode_line(outputs.bytecode_info(tmp_path)) == []
