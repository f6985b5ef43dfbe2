"""Tiles and run stores at ``s3://`` URLs, against a real S3-protocol server (moto in server
mode on 127.0.0.1), with the endpoint and credentials from storage options only."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import boto3
import numpy as np
import pandas as pd
import pytest
import requests

from mosaicflow.errors import StoreError, TileReadError, TileSetError
from mosaicflow.io import RunStore, read_tile, read_tileset
from mosaicflow.io.lock import StoreLock
from mosaicflow.io.regions import read_tile_region
from mosaicflow.io.remote import RemotePath
from mosaicflow.io.tiles import TileSet

BUCKET = "acquisitions"
KEY, SECRET = "AKIAMOSAICFLOWTEST", "mosaicflow-s3cr3t-for-tests"
#: What would let a client find the server or credentials without our options.
AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "FSSPEC_S3",
    "FSSPEC_S3_ENDPOINT_URL",
    "FSSPEC_S3_KEY",
    "FSSPEC_S3_SECRET",
)


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not any(name in os.environ for name in AWS_VARIABLES)


@pytest.fixture(scope="module")
def s3(small_grid, s3_server):
    """A moto S3 server on 127.0.0.1 holding the small grid at ``s3://acquisitions/acq``."""
    root = Path(small_grid.folder)
    endpoint, client = s3_server(root, BUCKET, KEY, SECRET)
    yield SimpleNamespace(
        endpoint=endpoint,
        options={"endpoint_url": endpoint, "key": KEY, "secret": SECRET},
        client=client,
        local=root,
        url=f"s3://{BUCKET}/acq",
    )


def enforce_auth(endpoint: str) -> tuple[str, str]:
    """Make the server check signatures from now on; returns a real key id (its secret is
    not needed: the tests give a wrong one). Undo with ``requests.post(.../reset-auth,
    b"inf")``."""
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"2", timeout=10)
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    iam.create_user(UserName="mosaicflow")
    key = iam.create_access_key(UserName="mosaicflow")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_tileset_at_url_equals_local(s3):
    remote = read_tileset(s3.url, storage_options=s3.options)
    local = read_tileset(s3.local)
    assert remote.to_meta() == {**local.to_meta(), "folder": s3.url}
    pd.testing.assert_frame_equal(
        remote.tiles.drop(columns="path"), local.tiles.drop(columns="path")
    )
    assert [p.rsplit("/", 1)[-1] for p in remote.tiles["path"]] == [
        Path(p).name for p in local.tiles["path"]
    ]
    read = {"shape": local.tile_shape, "dtype": local.dtype, "crop_bottom": local.crop_bottom}
    for url, path in zip(remote.tiles["path"][:2], local.tiles["path"][:2], strict=True):
        assert isinstance(url, RemotePath)
        np.testing.assert_array_equal(read_tile(url, **read), read_tile(path, **read))
        window = (slice(17, 140), slice(250, 400))
        np.testing.assert_array_equal(
            read_tile_region(url, *window, **read), read_tile_region(path, *window, **read)
        )
        # the plain URL with explicit options reads the same
        plain = url.as_posix()
        np.testing.assert_array_equal(
            read_tile(plain, **read, storage_options=s3.options), read_tile(path, **read)
        )


def test_tile_paths_carry_options_never_shown(s3):
    tileset = read_tileset(s3.url, storage_options=s3.options)
    path = tileset.tiles["path"].iloc[0]
    again = pickle.loads(pickle.dumps(path))  # as a Dask worker receives it
    assert again.storage_options == s3.options and again == path
    assert SECRET not in repr(path) and SECRET not in str(path) and SECRET not in repr(tileset)
    meta = json.dumps(tileset.to_meta())
    assert SECRET not in meta and KEY not in meta
    # rebuilt from the store's metadata (no credentials there), with the options given again
    rebuilt = TileSet.from_meta(tileset.to_meta(), tileset.tiles.astype({"path": str}), s3.options)
    assert rebuilt.tiles["path"].iloc[0].storage_options == s3.options


def test_missing_tile_and_folder_named(s3):
    with pytest.raises(TileSetError, match=f"{s3.url}-nope.*does not exist"):
        read_tileset(f"{s3.url}-nope", storage_options=s3.options)
    url = f"{s3.url}/Tile_009-009.tif"
    with pytest.raises(TileReadError, match=r"Tile_009-009\.tif.*not found"):
        read_tile(url, shape=(300, 400), dtype="uint8", storage_options=s3.options)


def test_run_store_tables_report_and_lock_on_s3(s3):
    url = f"s3://{BUCKET}/stores/t.zarr"
    store = RunStore(url, storage_options=s3.options)
    table = pd.DataFrame({"label": np.arange(1, 6), "area": np.linspace(1, 2, 5)})
    store.write_table("particles", table, metadata={b"units": b"{}"})
    pd.testing.assert_frame_equal(store.read_table("particles"), table)
    assert store.count_rows("particles") == 5 and store.table_columns("particles") == [
        "label",
        "area",
    ]
    import dask.dataframe as dd

    store.write_table("pairs", dd.from_pandas(table, npartitions=2))
    assert store.table_parts("pairs") == 2
    pd.testing.assert_frame_equal(store.read_table("pairs"), table)
    pd.testing.assert_frame_equal(
        store.read_table_lazy("pairs").compute().reset_index(drop=True), table
    )
    store.write_report_file("summary.json", json.dumps({"n": 5}))
    assert store.read_report_json("summary.json") == {"n": 5}
    lock = StoreLock(url, storage_options=s3.options)
    lock.acquire()
    other = StoreLock(url, storage_options=s3.options)
    with pytest.raises(StoreError, match="being written by another run"):
        other.acquire()
    lock.release()
    assert RunStore.is_run_store(url, storage_options=s3.options)


def test_wrong_secret_is_a_clear_error(s3):
    key, _ = enforce_auth(s3.endpoint)
    bad = {**s3.options, "key": key, "secret": "not-the-secret"}
    try:
        with pytest.raises(TileSetError) as err:
            read_tileset(s3.url, storage_options=bad)
        assert s3.url in str(err.value) and "access denied" in str(err.value)
        assert "not-the-secret" not in str(err.value)
        with pytest.raises(StoreError, match=f"run store 's3://{BUCKET}/x.zarr': access denied"):
            RunStore.check_target(f"s3://{BUCKET}/x.zarr", replace=False, storage_options=bad)
        with pytest.raises(TileReadError, match=r"Tile_001-001.*access denied"):
            read_tile(
                f"{s3.url}/Tile_001-001-000000_0-000.tif",
                shape=(300, 400),
                dtype="uint8",
                storage_options=bad,
            )
    finally:
        requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)


def test_storage_options_from_the_command_line_and_config():
    from mosaicflow.config import Config
    from mosaicflow.config.values import redact_options, storage_options_from_args
    from mosaicflow.errors import ConfigError

    options = storage_options_from_args(
        ["anon=true", "client_kwargs.region_name=us-east-1", "secret=0123", "max_pool=4"],
        {"key": "k", "client_kwargs": {"verify": False}},
    )
    assert options == {
        "key": "k",
        "client_kwargs": {"verify": False, "region_name": "us-east-1"},
        "anon": True,
        "secret": "0123",  # a credential stays a text
        "max_pool": 4,
    }
    assert redact_options(options)["secret"] == "***" and redact_options(options)["key"] == "***"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        storage_options_from_args(["endpoint_url"])
    with pytest.raises(ConfigError, match=r"storage\.options\.secret: expected") as err:
        Config.from_dict({"storage": {"options": {"secret": ["hunter2"]}}})
    assert "hunter2" not in str(err.value)
    config = Config.from_dict({"storage": {"options": {"secret": SECRET}}})
    assert SECRET not in repr(config)
