"""The site reader's S3 client (converters/s3reads.py): ranged, suffix and whole GETs, errors, URL styles, regions.

GETs go to the real moto S3 server on 127.0.0.1 (fixture `s3`), objects of random bytes. Only the region redirect,
which moto does not send, is played by a small HTTP server here that answers as S3 does for a bucket in another
region: 301 with the bucket's region in `x-amz-bucket-region`. Whole sites read through this client are compared
with the source pixels by tests/test_stream.py and tests/test_readers.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import numpy as np
import pytest

from converters.errors import BucketError
from converters.s3reads import S3Reads, S3Refused


@pytest.fixture(scope="module")
def stored(s3) -> bytes:
    data = np.random.default_rng(7).bytes(300_000)
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    client.create_bucket(Bucket="reads")
    client.put_object(Bucket="reads", Key="a/b c/object", Body=data)  # a space: the key is quoted in the URL
    return data


def reads(s3, **options) -> S3Reads:
    return S3Reads("reads", {"endpoint": s3.endpoint, **options}, 5, 30, 4)


@contextmanager
def playing(answers: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """The endpoint of a small HTTP server on 127.0.0.1 answering with `answers`, for what moto does not send."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


class Quiet(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        return None


def test_ranged_suffix_and_whole_gets_return_the_objects_bytes(s3, stored: bytes) -> None:
    client = reads(s3)
    assert client.get("a/b c/object") == stored
    assert client.get("a/b c/object", 1000, 70_000) == stored[1000:71_000]
    assert client.get("a/b c/object", -16, 16) == stored[-16:]
    s3.requests.clear()
    client.get("a/b c/object", 5, 5)
    assert s3.count() == s3.count("GET") == 1  # one request, no HEAD before it


def test_unsigned_requests_read_public_objects_only(s3, stored: bytes) -> None:
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    client.put_object(Bucket="reads", Key="public", Body=stored, ACL="public-read")
    assert reads(s3, skip_signature=True, request_payer=True).get("public", 0, 10) == stored[:10]
    with pytest.raises(PermissionError, match=r"s3://reads/a/b c/object: HTTP 403 \w"):
        reads(s3, skip_signature=True).get("a/b c/object", 0, 10)


def test_a_missing_object_is_file_not_found_and_a_refusal_is_not_retried(s3, stored: bytes) -> None:
    with pytest.raises(FileNotFoundError, match=r"s3://reads/nothing: HTTP 404 NoSuchKey"):
        reads(s3).get("nothing")
    with pytest.raises(S3Refused, match=r"HTTP 416"):
        reads(s3).get("a/b c/object", 10_000_000, 10)


def test_urls_of_aws_and_of_other_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    aws = S3Reads("my-bucket", {"region": "eu-west-1", "skip_signature": "true"}, 5, 30, 1)
    assert aws._url("x/c.0.0") == "https://my-bucket.s3.eu-west-1.amazonaws.com/x/c.0.0"
    dotted = S3Reads("my.bucket", {"region": "eu-west-1", "skip_signature": True}, 5, 30, 1)
    assert dotted._url("x") == "https://s3.eu-west-1.amazonaws.com/my.bucket/x"
    other = S3Reads("b", {"aws_endpoint": "http://127.0.0.1:9000/", "skip_signature": True}, 5, 30, 1)
    assert other._url("k") == "http://127.0.0.1:9000/b/k"
    hosted = S3Reads("b", {"endpoint": "https://minio.lab:9000", "virtual_hosted_style_request": "true",
                           "skip_signature": True}, 5, 30, 1)
    assert hosted._url("k") == "https://b.minio.lab:9000/k"


def test_the_region_s3_names_is_followed() -> None:
    """A bucket in eu-west-1 asked with a us-east-1 signature: S3 answers 301 naming the region; the client signs
    again for it, and keeps it for the next GETs."""
    seen: list[str] = []

    class Regional(Quiet):
        def do_GET(self) -> None:
            seen.append(self.headers["Authorization"])
            right = "/eu-west-1/s3/" in self.headers["Authorization"]
            self.send_response(206 if right else 301)
            body = b"pixels" if right else b"<Error><Code>PermanentRedirect</Code><Message>elsewhere</Message></Error>"
            self.send_header("x-amz-bucket-region", "eu-west-1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with playing(Regional) as endpoint:
        client = S3Reads("b", {"endpoint": endpoint, "region": "us-east-1", "access_key_id": "k",
                               "secret_access_key": "s"}, 5, 30, 1)
        assert client.get("k", 0, 6) == b"pixels" and client.region == "eu-west-1"
        assert client.get("k", 0, 6) == b"pixels"
        assert len(seen) == 3  # one 301, then every GET signed for the bucket's region at once


def test_storage_options_for_writes_are_ignored_and_others_refused(s3, stored: bytes) -> None:
    assert reads(s3, bucket="reads", conditional_put="etag").get("a/b c/object", 0, 10) == stored[:10]
    with pytest.raises(BucketError, match=r"s3://reads: the site readers do not take the storage option\(s\) "
                                          r"role_arn, sse_customer_key_base64 .*AWS_ROLE_ARN"):
        reads(s3, aws_role_arn="arn:aws:iam::1:role/r", sse_customer_key_base64="a2V5")


def test_a_server_that_ignores_the_range_still_gives_the_bytes_asked_for() -> None:
    """Some S3-compatible servers answer a ranged GET with 200 and the whole object (played by a small server)."""
    body = bytes(range(256)) * 4

    class Whole(Quiet):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with playing(Whole) as endpoint:
        client = S3Reads("b", {"endpoint": endpoint, "skip_signature": True}, 5, 30, 1)
        assert client.get("k", 10, 20) == body[10:30]
        assert client.get("k", -16, 16) == body[-16:]
        assert client.get("k") == body


class Counted(Quiet):
    """HTTP/1.1 answers of the bytes asked for, counting the connections the client opened."""

    protocol_version = "HTTP/1.1"
    body = bytes(range(256)) * 40
    opened: list[int] = []
    close_after: bool = False  # drop the connection after each answer without saying so, as idle timeouts do

    def setup(self) -> None:
        super().setup()
        type(self).opened.append(1)

    def do_GET(self) -> None:
        start, _, end = self.headers["Range"].removeprefix("bytes=").partition("-")
        part = self.body[int(start):int(end) + 1]
        self.send_response(206)
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)
        if self.close_after:
            self.close_connection = True


def test_connections_are_kept_alive_and_shared_by_threads() -> None:
    class Alive(Counted):
        opened: list[int] = []

    with playing(Alive) as endpoint:
        client = S3Reads("b", {"endpoint": endpoint, "skip_signature": True}, 5, 30, 4)
        for i in range(20):
            assert client.get("k", i * 100, 100) == Alive.body[i * 100:i * 100 + 100]
        assert len(Alive.opened) == 1
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda i: client.get("k", i * 37, 500), range(200)))
        assert got == [Alive.body[i * 37:i * 37 + 500] for i in range(200)]
        assert len(Alive.opened) <= 1 + 4  # never more than the threads reading at once


def test_a_connection_the_server_dropped_while_idle_is_replaced() -> None:
    """A server that closes each connection after answering (as an idle timeout does) without `Connection: close`:
    the client finds the pooled connection dead on its next GET and sends it again on a new one."""
    class Dropping(Counted):
        opened: list[int] = []
        close_after = True

    with playing(Dropping) as endpoint:
        client = S3Reads("b", {"endpoint": endpoint, "skip_signature": True}, 5, 30, 4)
        for i in range(10):
            time.sleep(0.02)  # the server has closed the idle connection by now
            assert client.get("k", i * 10, 10) == Dropping.body[i * 10:i * 10 + 10]
        assert len(Dropping.opened) == 10
