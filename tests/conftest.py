"""Shared fixtures: where the real sample data lives, and generated sources cut from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PLATEZARR_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """A path inside ../shared/data, or a skip naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real sample data not found at {path} (set PLATEZARR_SHARED_DATA or check out shared/ beside the repo)")
    return path


@pytest.fixture
def rxrx1_dir() -> Path:
    """The real RxRx1 sample: images/train/{experiment}/Plate{n}/B02_s{1,2}_w{1..6}.png and metadata.csv."""
    return shared("rxrx1")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 server on 127.0.0.1 (started here, stopped at the end) with the environment pointing at it.

    Credentials are dummies and AWS_ENDPOINT_URL is the loopback server, so no test reaches AWS.
    """
    pytest.importorskip("moto")
    from s3server import S3Server

    server = S3Server().start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
