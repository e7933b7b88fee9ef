"""The bad-input catalogue (see test_bad_input.py) for services: Dask schedulers and buckets. Each case gives a
clear message naming the address, URL or option at fault, exit status 1 (2 for a malformed --scheduler), and
never a traceback or a hang.

Every target is on 127.0.0.1: a real HTTP server, a socket that accepts and never answers, a closed port, and
the moto S3 server of the `s3` fixture. Scheduler runs set PLATEZARR_SCHEDULER_TIMEOUT=2 (the default is 20 s)
so each failing case ends in seconds; bucket cases rely on platezarr's short default waits (3 retries within 30 s,
5 s connect timeout), which a refused loopback connection exhausts in about a second.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest

from sources import write_rxrx_source

TIMEOUT = "2"  # PLATEZARR_SCHEDULER_TIMEOUT in these tests: seconds
QUICK = 60  # seconds any failing case may take, start-up included
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    write_rxrx_source(tmp_path / "images", {("HUVEC-01", 1): ["B02"]}, size=128)
    return tmp_path / "images"


def cli(*args: str, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI; the result and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "converters.cli", *args], capture_output=True, text=True, cwd=cwd,
                            timeout=300, env=env if env is not None else os.environ.copy(), check=False)
    return result, time.monotonic() - started


def assert_clear(result: subprocess.CompletedProcess, status: int, *needles: str) -> None:
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_server() -> Iterator[int]:
    """A real HTTP server (the standard library's) on a loopback port."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never sends a byte."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@contextmanager
def http_at_once() -> Iterator[int]:
    """A loopback port that answers every connection at once with an HTTP error and hangs up."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nbad request\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@contextmanager
def nothing() -> Iterator[int]:
    yield closed_port()


# Issue 7: --scheduler that is not a Dask scheduler

@pytest.mark.parametrize("address, problem", [
    ("http://127.0.0.1:8787", "it is a web address"),
    ("tcp://localhost:notaport", "the port in 'localhost:notaport' is not a number"),
    ("tcp://127.0.0.1:99999", "is not a number from 1 to 65535"),
    ("tcp://127.0.0.1", "it names no port"),
    ("tcp://:8786", "it names no host"),
    ("tcp://127.0.0.1:8786/path", "holds more than host:port"),
    ("smtp://127.0.0.1:25", "unknown scheme 'smtp'"),
    ("", "it names no host"),
])
def test_malformed_scheduler_address_is_a_usage_error(tmp_path: Path, address: str, problem: str) -> None:
    result, seconds = cli("convert", "images", "o.zarr", "--no-progress", "--scheduler", address, cwd=tmp_path)
    assert_clear(result, 2, "Invalid value for '--scheduler'", f"{address!r} is not a Dask scheduler address", problem,
                 "tcp://scheduler-host:8786")
    assert seconds < QUICK and not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("server", [http_server, silent_server, http_at_once, nothing],
                         ids=["HTTP server", "accepts, never answers", "answers HTTP at once", "closed port"])
def test_scheduler_that_is_not_dask_fails_within_the_timeout(images: Path, server: Callable) -> None:
    with server() as port:
        address = f"tcp://127.0.0.1:{port}"
        env = os.environ | {"PLATEZARR_SCHEDULER_TIMEOUT": TIMEOUT}
        result, seconds = cli("convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress",
                              "--scheduler", address, env=env, cwd=images.parent)
    assert_clear(result, 1, f"cannot reach the Dask scheduler at {address} within {TIMEOUT} s",
                 "check that the scheduler runs", "PLATEZARR_SCHEDULER_TIMEOUT")
    assert seconds < QUICK


def test_bad_scheduler_timeout_variable(images: Path) -> None:
    env = os.environ | {"PLATEZARR_SCHEDULER_TIMEOUT": "soon"}
    with silent_server() as port:
        result, _ = cli("convert", "images", "o.zarr", "--dataset", "rxrx1_demo", "--no-progress",
                        "--scheduler", f"tcp://127.0.0.1:{port}", env=env, cwd=images.parent)
    assert_clear(result, 1, "PLATEZARR_SCHEDULER_TIMEOUT='soon' is not a number of seconds > 0")


# Issue 8: buckets without credentials, out of reach, or with options obstore does not take

@pytest.fixture
def bucket(s3) -> str:
    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="bad-services")
    return "s3://bad-services"


@pytest.mark.parametrize("options, needles", [
    ({"bogus": 1}, ["unknown storage option 'bogus'", "S3 stores accept access_key_id", "skip_signature",
                    '"client_options" (allow_http']),
    ({"allow_http": True}, ["storage option 'allow_http' belongs under \"client_options\"",
                            """'{"client_options": {"allow_http": true}}'"""]),
    ({"AWS_ALLOW_HTTP": "true"}, ["'AWS_ALLOW_HTTP' belongs under \"client_options\""]),
    ({"anon": True}, ["'anon' is s3fs's name; obstore's is 'skip_signature'"]),
    ({"client_options": {"alow_http": True}}, ["unknown key 'alow_http' in storage option \"client_options\"",
                                               "it accepts allow_http"]),
    ({"client_options": {"timeout": 5}}, ["cannot use the storage options", 'durations like "10s"']),
    ({"retry_config": {"max_retries": 1, "wait": 2}}, ["unknown key 'wait' in storage option \"retry_config\""]),
])
def test_storage_option_obstore_does_not_take(images: Path, bucket: str, options: dict, needles: list[str]) -> None:
    out = f"{bucket}/o.zarr"
    result, _ = cli("convert", "images", out, "--dataset", "rxrx1_demo", "--no-progress",
                    "--storage-options", json.dumps(options), cwd=images.parent)
    assert_clear(result, 1, f"error: {out}: ", *needles)


def commands(bucket: str) -> dict[str, tuple[str, list[str]]]:
    """The URL each command reaches first, and the command: a metadata table to download, a store to open."""
    return {
        "convert --metadata": (f"{bucket}/metadata.csv", ["convert", "images", "o.zarr", "--dataset", "rxrx1_demo",
                                                          "--no-progress", "--metadata", f"{bucket}/metadata.csv"]),
        "info": (f"{bucket}/store.zarr", ["info", f"{bucket}/store.zarr"]),
        "convert from a bucket": (f"{bucket}/images", ["convert", f"{bucket}/images", "o.zarr", "--dataset", "rxrx1_demo",
                                                        "--no-progress"]),
        "convert into a bucket": (f"{bucket}/o.zarr", ["convert", "images", f"{bucket}/o.zarr", "--dataset",
                                                        "rxrx1_demo", "--no-progress"]),
    }


COMMANDS = ["convert --metadata", "info", "convert from a bucket", "convert into a bucket"]


@pytest.mark.parametrize("command", COMMANDS)
def test_bucket_without_credentials(images: Path, bucket: str, command: str) -> None:
    """No AWS_* keys in the environment; the instance metadata service, the last resort, is a closed loopback port."""
    url, args = commands(bucket)[command]
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    env["AWS_METADATA_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    result, seconds = cli(*args, env=env, cwd=images.parent)
    assert_clear(result, 1, f"error: {url}: cannot ", "found no AWS credentials", "AWS_ACCESS_KEY_ID",
                 '{"skip_signature": true}')
    assert "Debug source" not in result.stderr and seconds < QUICK


@pytest.mark.parametrize("command", COMMANDS)
def test_bucket_endpoint_out_of_reach(images: Path, bucket: str, command: str) -> None:
    url, args = commands(bucket)[command]
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result, seconds = cli(*args, "--storage-options", json.dumps({"endpoint": endpoint}), cwd=images.parent)
    assert_clear(result, 1, f"error: {url}: cannot ", endpoint, "check the URL, the endpoint",
                 "gave up after 3 retries within 30 s (connect timeout 5s, request timeout 30s)", '"max_retries": 10')
    assert "Debug source" not in result.stderr and seconds < QUICK
