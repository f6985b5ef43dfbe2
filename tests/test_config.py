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
