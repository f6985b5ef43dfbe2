"""Run configuration: dictionaries, YAML, environment variables and their errors."""

from __future__ import annotations

import pytest

from mosaicflow.config import Config
from mosaicflow.errors import ConfigError


def test_config_roundtrip_env_and_errors(tmp_path):
    config = Config.from_dict({"denoise": {"sigma": 2}, "store": {"chunk": 512}})
    assert config.denoise.sigma == 2.0 and config.store.chunk == 512
    assert Config.from_dict(config.to_dict()) == config
    env = {"MOSAICFLOW_LABEL__CONNECTIVITY": "2", "MOSAICFLOW_CLUSTER__ADDRESS": "tcp://h:8786"}
    over = config.with_env(env)
    assert over.label.connectivity == 2 and over.cluster.address == "tcp://h:8786"
    with pytest.raises(ConfigError, match=r"unknown key denoise\.sigmaa"):
        Config.from_dict({"denoise": {"sigmaa": 1}})
    with pytest.raises(ConfigError, match="unknown configuration section"):
        Config.from_dict({"denoiser": {}})
    with pytest.raises(ConfigError, match=r"denoise\.sigma must be > 0"):
        Config.from_dict({"denoise": {"sigma": -1}})
    with pytest.raises(ConfigError, match=r"store\.chunk: expected int"):
        Config.from_dict({"store": {"chunk": "big"}})
    path = tmp_path / "run.yaml"
    path.write_text("input: /data/acq\ndenoise:\n  sigma: 1.5\n")
    assert Config.from_yaml(path).input == "/data/acq"
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        Config.from_yaml(path)


def test_booleans_stay_booleans():
    assert Config.from_dict({"classify": {"trust_pickle": "false"}}).classify.trust_pickle is False
    assert Config().with_env({"MOSAICFLOW_SEGMENT__TTA": "true"}).segment.tta is True
    with pytest.raises(ConfigError, match=r"classify\.trust_pickle: expected true or false"):
        Config.from_dict({"classify": {"trust_pickle": "maybe"}})


@pytest.mark.parametrize(
    ("section", "key", "value", "pattern"),
    [
        ("store", "chunk", 512.9, r"store\.chunk: expected int .*512\.9"),
        ("store", "chunk", "512.5", r"store\.chunk: expected int .*'512\.5'"),
        ("store", "chunk", True, r"store\.chunk: expected int .*True"),
        ("segment", "tta", "no", r"segment\.tta: expected true or false, got 'no'"),
        ("segment", "tta", 1, r"segment\.tta: expected true or false, got 1"),
        ("denoise", "sigma", True, r"denoise\.sigma: expected float .*True"),
        ("denoise", "sigma", float("nan"), r"denoise\.sigma: expected a finite number, got nan"),
        ("denoise", "sigma", "inf", r"denoise\.sigma: expected a finite number, got 'inf'"),
        ("measure", "max_object_fraction", [0.5], r"measure\.max_object_fraction: .*\[0\.5\]"),
        ("measure", "block", 0, r"measure\.block must be >= 1 \(stored chunks per task\), got 0"),
        ("measure", "block", 1.5, r"measure\.block: expected int .*1\.5"),
        ("segment", "model", True, r"segment\.model: expected str .*True"),
        ("segment", "runtime", "tvm", r"segment\.runtime must be auto, torch or onnx, got 'tvm'"),
        ("segment", "resources", {"GPU": "one"}, r"segment\.resources\.GPU: .*'one'"),
        ("segment", "resources", {"GPU": -1}, r"segment\.resources: .*>= 0.*-1"),
        ("cluster", "n_workers", 0, r"cluster\.n_workers \(--workers\) must be >= 1.*got 0"),
        ("cluster", "n_workers", -1, r"cluster\.n_workers \(--workers\) must be >= 1.*got -1"),
        ("cluster", "n_workers", 2.5, r"cluster\.n_workers: expected int .*2\.5"),
        ("cluster", "threads_per_worker", 0, r"cluster\.threads_per_worker must be >= 1"),
        ("cluster", "memory_limit", "lots", r"cluster\.memory_limit: expected 'auto'.*'lots'"),
        ("cluster", "memory_limit", "-4GB", r"cluster\.memory_limit: .*'-4GB' \(negative\)"),
        ("cluster", "memory_limit", 1.5, r"cluster\.memory_limit: expected 'auto'.*1\.5"),
        ("cluster", "memory_limit", "inf", r"cluster\.memory_limit: expected 'auto'.*'inf'"),
        ("cluster", "memory_limit", "4", r"cluster\.memory_limit: '4' is only 4 bytes"),
    ],
)
def test_every_value_is_checked_with_its_type(section, key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Config.from_dict({section: {key: value}})


def test_typed_values_from_yaml_env_and_python(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("store:\n  chunk: 512.9\n")
    with pytest.raises(ConfigError, match=r"store\.chunk: expected int"):
        Config.from_yaml(path)
    path.write_text("segment:\n  tta: 'no'\n")  # quoted: the text 'no', not YAML's false
    with pytest.raises(ConfigError, match=r"segment\.tta: expected true or false"):
        Config.from_yaml(path)
    # environment variables arrive as text: numbers and true/false are parsed
    env = {"MOSAICFLOW_STORE__CHUNK": "512", "MOSAICFLOW_SEGMENT__TTA": "False"}
    config = Config().with_env(env)
    assert config.store.chunk == 512 and type(config.store.chunk) is int
    assert config.segment.tta is False
    with pytest.raises(ConfigError, match=r"store\.chunk: expected int .*512\.9"):
        Config().with_env({"MOSAICFLOW_STORE__CHUNK": "512.9"})
    with pytest.raises(ConfigError, match=r"cluster\.n_workers \(--workers\) must be >= 1"):
        Config().with_env({"MOSAICFLOW_CLUSTER__N_WORKERS": "0"})
    # an integral float is taken as the integer it is; floats stay floats
    config = Config.from_dict({"store": {"chunk": 512.0}, "denoise": {"sigma": 2}})
    assert type(config.store.chunk) is int and config.store.chunk == 512
    assert type(config.denoise.sigma) is float
    # a text option given as a number is written out
    assert Config.from_dict({"tiles": {"overlap": 0.1}}).tiles.overlap == "0.1"
    # values set in Python (as the command line does) are checked the same way
    with pytest.raises(ConfigError, match=r"store\.chunk: expected int .*512\.9"):
        Config().replace("store", chunk=512.9)
    with pytest.raises(ConfigError, match=r"cluster\.n_workers \(--workers\) must be >= 1"):
        Config().replace("cluster", n_workers=0)
    assert Config().replace("cluster", n_workers=3).cluster.n_workers == 3


@pytest.mark.parametrize(
    "value", ["auto", "4GiB", "4 GB", "500MB", 4_000_000_000, "4000000000", 0.5, "0.5", 1, 0]
)
def test_memory_limits_distributed_reads(value):
    import logging

    from distributed.worker_memory import parse_memory_limit

    config = Config.from_dict({"cluster": {"memory_limit": value}})
    assert isinstance(config.cluster.memory_limit, str)
    assert Config.from_dict(config.to_dict()) == config
    # the oracle: distributed reads the kept text exactly as the value given
    log = logging.getLogger("test")
    read = parse_memory_limit(config.cluster.memory_limit, 1, total_cores=2, logger=log)
    assert read == parse_memory_limit(value, 1, total_cores=2, logger=log)
    assert (read is None) == (value == 0)


def test_same_input_compares_resolved_paths(tmp_path, monkeypatch):
    from mosaicflow.config.values import config_differences, same_input

    folder = tmp_path / "acq"
    folder.mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    assert same_input("acq", str(folder))
    assert same_input("acq/", "./acq")
    assert same_input(str(folder) + "/", folder)
    assert not same_input("acq", "other")
    assert not same_input("acq", None) and same_input(None, None)
    assert same_input("s3://bucket/acq/", "s3://bucket/acq")
    assert not same_input("s3://bucket/acq", "s3://bucket/other")
    stored = Config(input=str(folder)).to_dict()
    assert config_differences(stored, Config(input="acq/").to_dict()) == []
    diffs = config_differences(stored, Config(input="other").to_dict())
    assert diffs == [f"input: {str(folder)!r} -> 'other'"]
    stored = Config.from_dict({"classify": {"model": str(tmp_path / "f.json")}}).to_dict()
    current = Config.from_dict({"classify": {"model": "./f.json"}}).to_dict()
    assert config_differences(stored, current) == []
    assert config_differences(stored, Config().to_dict()) == [
        f"classify.model: {str(tmp_path / 'f.json')!r} -> None"
    ]


def test_segment_predict_options_are_predict_keywords():
    """The one place the pipeline's inference options come from names only predict's own
    keywords, with the section's values."""
    import inspect

    from mosaicflow.config import SegmentConfig
    from mosaicflow.segmentation import predict

    cfg = SegmentConfig(window=256, overlap=0.5, batch_size=2, tta=True, runtime="torch")
    options = cfg.predict_options()
    keywords = inspect.signature(predict).parameters
    assert set(options) <= set(keywords)
    assert options["window"] == 256 and options["overlap"] == 0.5 and options["tta"] is True
    assert options["batch_size"] == 2 and options["runtime"] == "torch"


def test_store_chunk_is_chosen_by_the_segmenter_unless_set():
    from mosaicflow.config import DEFAULT_CHUNK_PX, MODEL_CHUNK_PX

    assert Config().store.chunk is None
    assert Config().chunk_px == DEFAULT_CHUNK_PX == 2048
    model = Config().replace("segment", method="model", model="default")
    assert model.chunk_px == MODEL_CHUNK_PX == 1024
    # a chunk the user sets wins on both paths, and survives a round trip
    for config in (Config(), model):
        chosen = config.replace("store", chunk=512)
        assert chosen.chunk_px == 512
        assert Config.from_dict(chosen.to_dict()).chunk_px == 512
    assert Config.from_dict(model.to_dict()).chunk_px == MODEL_CHUNK_PX
    assert Config().with_env({"MOSAICFLOW_STORE__CHUNK": "null"}).chunk_px == DEFAULT_CHUNK_PX
    with pytest.raises(ConfigError, match=r"store\.chunk must be >= 16 px"):
        Config().replace("store", chunk=8)
