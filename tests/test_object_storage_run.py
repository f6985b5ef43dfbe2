"""The whole pipeline with its input and run store at ``s3://`` URLs on a real S3-protocol
server (moto in server mode on 127.0.0.1), endpoint and credentials from the storage options
only: the same store as a local-disk run of the same grid, and no credential stored."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import boto3
import numpy as np
import pandas as pd
import pytest
import requests

from mosaicflow import cli
from mosaicflow.config import Config
from mosaicflow.io import RunStore, open_run
from mosaicflow.pipeline import Pipeline

BUCKET = "runs"
KEY, SECRET = "AKIAMOSAICFLOWRUN", "mosaicflow-run-s3cr3t"
AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "FSSPEC_S3_ENDPOINT_URL",
    "FSSPEC_S3_KEY",
    "FSSPEC_S3_SECRET",
)
IMAGES = ("mosaic", "denoised", "probability", "labels/particles")


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not any(name in os.environ for name in AWS_VARIABLES)


@pytest.fixture(scope="module")
def s3(small_grid, tmp_path_factory, s3_server):
    """The small grid on a moto S3 server at ``s3://runs/acq``, and a local-disk run of it."""
    root = Path(small_grid.folder)
    endpoint, client = s3_server(root, BUCKET, KEY, SECRET)
    local = tmp_path_factory.mktemp("local") / "run.zarr"
    Pipeline(Config(input=str(root)), local).run()  # threaded scheduler
    yield SimpleNamespace(
        endpoint=endpoint,
        options={"endpoint_url": endpoint, "key": KEY, "secret": SECRET},
        client=client,
        url=f"s3://{BUCKET}/acq",
        local=RunStore(str(local), mode="r"),
    )


def by_name(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its path columns reduced to file names (the prefixes differ)."""
    out = table.copy()
    for column in ("path", "file"):
        if column in out:
            out[column] = [str(p).rsplit("/", 1)[-1] for p in out[column]]
    return out


def assert_same_store(remote: RunStore, local: RunStore) -> None:
    for name in IMAGES:
        levels = local.image_levels(name)
        assert levels and remote.image_levels(name) == levels, name
        for level in levels:
            a, b = remote.open_level(name, level)[:], local.open_level(name, level)[:]
            assert a.dtype == b.dtype and np.array_equal(a, b), (name, level)
    for name in ("particles", "tiles"):
        pd.testing.assert_frame_equal(
            by_name(remote.read_table(name)), by_name(local.read_table(name))
        )
    got, want = remote.read_report_json("summary.json"), local.read_report_json("summary.json")
    for key in ("count", "median_nm", "below_min_size", "at_edge"):
        assert got["particles"].get(key) == want["particles"].get(key), key


def stored_attributes(s3, prefix: str) -> str:
    body = s3.client.get_object(Bucket=BUCKET, Key=f"{prefix}/zarr.json")["Body"].read()
    return body.decode()


def test_s3_run_identical_to_local(s3):
    config = Config(input=s3.url).replace("storage", options=s3.options)
    pipeline = Pipeline(config, f"s3://{BUCKET}/run.zarr")
    pipeline.preflight()
    store = pipeline.run()  # threaded scheduler, no client
    assert_same_store(store, s3.local)
    attrs = stored_attributes(s3, "run.zarr")
    assert SECRET not in attrs and KEY not in attrs
    meta = json.loads(attrs)["attributes"]["mosaicflow"]
    assert meta["config"]["storage"]["options"] == {
        "endpoint_url": s3.endpoint,
        "key": "***",
        "secret": "***",
    }
    assert meta["tileset"]["folder"] == s3.url
    data = open_run(f"s3://{BUCKET}/run.zarr", storage_options=s3.options)
    np.testing.assert_array_equal(
        data["labels"].values, s3.local.open_level("labels/particles", 0)[:]
    )
    # resumed from a fresh process state: the tile set comes back from the store's metadata
    again = Pipeline(config, f"s3://{BUCKET}/run.zarr", resume=True).run()
    assert again.stage_done("report")


def test_wrong_secret_fails_before_any_work(s3, capsys):
    requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"2", timeout=10)
    iam = boto3.client(
        "iam",
        endpoint_url=s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    iam.create_user(UserName="runner")
    key = iam.create_access_key(UserName="runner")["AccessKey"]["AccessKeyId"]
    out = f"s3://{BUCKET}/refused.zarr"
    try:
        options = [f"endpoint_url={s3.endpoint}", f"key={key}", "secret=wrong-s3cr3t"]
        code = cli.main(
            ["run", s3.url, "--out", out, "--quiet", *(f"--storage-option={o}" for o in options)]
        )
    finally:
        requests.post(f"{s3.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    text = capsys.readouterr()
    assert code != 0
    message = text.out + text.err
    # the input is the first thing asked for: its URL is named, before any cluster or write
    assert f"input '{s3.url}': access denied" in message.replace("\n", " ")
    assert "Traceback" not in message and "wrong-s3cr3t" not in message
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix="refused.zarr")
    assert listed.get("KeyCount", 0) == 0  # nothing written


@pytest.mark.cluster
def test_cli_run_on_cluster_workers_get_the_options(s3, client):
    out = f"s3://{BUCKET}/cli.zarr"
    options = [f"endpoint_url={s3.endpoint}", f"key={KEY}", f"secret={SECRET}"]
    argv = ["run", s3.url, "--out", out, "--quiet", "--cluster", client.scheduler.address]
    assert cli.main([*argv, *(f"--storage-option={o}" for o in options)]) == 0
    store = RunStore(out, mode="r", storage_options=s3.options)
    assert_same_store(store, s3.local)
    assert SECRET not in stored_attributes(s3, "cli.zarr")
