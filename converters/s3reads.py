"""Whole and ranged GETs of S3 objects for the site reader: keep-alive http.client connections, requests signed
by botocore.

A training loader makes one GET per site, so the client's CPU per GET bounds it. For a 700 KB ranged GET on
127.0.0.1 this client spends 1.65-1.83 ms of CPU (2.19 ms through urllib3's pool), obstore 1.78 ms, boto3 4.4 ms
and s3fs 5.7 ms (`python benchmarks/get_cost.py`).
obstore cannot serve DataLoader workers: its runtime hangs in a process forked after it started. The connections
and botocore's signer are plain Python, made afresh in each process by the reader. Credentials come from botocore's
chain (the storage options, the environment, ~/.aws profiles, web identity, instance metadata); without any,
requests go unsigned (public buckets).
"""

from __future__ import annotations

import http.client
import os
import re
import ssl
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from converters.errors import BucketError

# The storage options (obstore's names, converters/location.py) this client follows, and those it need not: they
# concern writes, or say what the URL already says.
FOLLOWED = frozenset({"access_key_id", "secret_access_key", "session_token", "token", "region", "default_region",
                      "endpoint", "endpoint_url", "skip_signature", "virtual_hosted_style_request", "request_payer"})
UNUSED = frozenset({"bucket", "bucket_name", "unsigned_payload", "checksum_algorithm", "conditional_put",
                    "copy_if_not_exists", "disable_tagging", "disable_bulk_delete", "server_side_encryption",
                    "sse_kms_key_id", "sse_bucket_key_enabled"})


class S3Refused(OSError):
    """S3 answered a request with an error that asking again will not change (a 4xx other than 404 and 403)."""


class S3Reads:
    """GETs of the objects of one bucket with `connections` pooled connections, one attempt each (the reader
    retries). 404 raises FileNotFoundError, 401/403 PermissionError, other 4xx S3Refused; 5xx and 429 a
    ConnectionError, worth another attempt."""

    def __init__(self, bucket: str, options: dict[str, Any], connect_timeout: float, timeout: float,
                 connections: int) -> None:
        """`options`: the storage options; a BucketError names any this client does not follow."""
        import botocore.session

        self.bucket = bucket
        options = read_options(f"s3://{bucket}", options)
        endpoint = options.get("endpoint") or options.get("endpoint_url") or os.environ.get(
            "AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.endpoint = str(endpoint).rstrip("/") if endpoint else None
        self.virtual_hosted = truth(options.get("virtual_hosted_style_request", self.endpoint is None))
        session = botocore.session.get_session()
        self.region = str(options.get("region") or options.get("default_region") or session.get_config_variable("region")
                          or "us-east-1")
        self.credentials = None if truth(options.get("skip_signature", False)) else _credentials(options, session)
        self.headers = {"x-amz-request-payer": "requester"} if truth(options.get("request_payer", False)) else {}
        self.connections = Connections(connect_timeout, timeout, connections)

    def get(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """`length` bytes of object `key` from `start` (negative: that many from the end), or all of it."""
        headers = dict(self.headers)
        if length is not None:
            headers["Range"] = f"bytes={start}" if start < 0 else f"bytes={start}-{start + length - 1}"
        for _ in range(2):  # a second time only after S3 named the bucket's region (a 301 or 400 saying so)
            url = self._url(key)
            response, data = self.connections.get(url, self._signed(url, headers))
            if response.status in (200, 206):
                if length is None:
                    return data
                # 200: a server that ignores Range sends the whole object
                return data[start:][:length] if response.status == 200 else data[:length]
            region = response.headers.get("x-amz-bucket-region")
            if response.status not in (301, 400) or not region or region == self.region:
                break
            self.region = region
        message = f"s3://{self.bucket}/{key}: HTTP {response.status} {_error(data) or response.reason}"
        if response.status == 404:
            raise FileNotFoundError(message)
        if response.status in (401, 403):
            raise PermissionError(message)
        if response.status >= 500 or response.status == 429:
            raise ConnectionError(message)
        raise S3Refused(message)

    def _url(self, key: str) -> str:
        path = quote(key, safe="/~")
        if self.endpoint is None:
            host = f"s3.{self.region}.amazonaws.com"
            if "." in self.bucket or not self.virtual_hosted:  # a dotted name breaks the TLS certificate's wildcard
                return f"https://{host}/{self.bucket}/{path}"
            return f"https://{self.bucket}.{host}/{path}"
        if self.virtual_hosted:
            parts = urlsplit(self.endpoint)
            return f"{parts.scheme}://{self.bucket}.{parts.netloc}{parts.path}/{path}"
        return f"{self.endpoint}/{self.bucket}/{path}"

    def _signed(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        """`headers` with AWS Signature Version 4 for a GET of `url` (unchanged when requests go unsigned)."""
        if self.credentials is None:
            return headers
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method="GET", url=url, headers=headers)
        S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        return dict(request.headers.items())


class Connections:
    """Keep-alive HTTP(S) connections shared by a process's threads: a GET takes an idle one to its host (or opens
    one), reads the whole answer and puts it back; at most `size` idle ones are kept per host. A connection the
    server closed while it was idle is replaced once, as a GET may be sent again."""

    STALE = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)  # RemoteDisconnected is a reset

    def __init__(self, connect_timeout: float, timeout: float, size: int) -> None:
        self.connect_timeout, self.timeout, self.size = connect_timeout, timeout, size
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def get(self, url: str, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        """The answer to a GET of `url` and its whole body. Timeouts and transport errors are raised for the
        reader to try again."""
        parts = urlsplit(url)
        host, target = (parts.scheme, parts.netloc), parts.path + (f"?{parts.query}" if parts.query else "")
        while True:
            connection, reused = self._take(host)
            try:
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except BaseException as exc:
                connection.close()
                if reused and isinstance(exc, self.STALE):
                    continue
                raise
            if response.will_close:
                connection.close()
            else:
                self._put(host, connection)
            return response, data

    def _take(self, host: tuple[str, str]) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(host)
            if idle:
                return idle.pop(), True
        scheme, netloc = host
        connection: http.client.HTTPConnection
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            connection = http.client.HTTPSConnection(netloc, timeout=self.connect_timeout, context=self._tls)
        else:
            connection = http.client.HTTPConnection(netloc, timeout=self.connect_timeout)
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(self.timeout)  # the connect timeout bounds the handshake, this every read
        return connection, False

    def _put(self, host: tuple[str, str], connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(host, [])
            if len(idle) < self.size:
                idle.append(connection)
                return
        connection.close()


def _credentials(options: dict[str, Any], session: Any) -> Any:
    """The credentials of the storage options, else of botocore's chain (None when it finds none)."""
    from botocore.credentials import Credentials

    key, secret = options.get("access_key_id"), options.get("secret_access_key")
    if key and secret:
        return Credentials(str(key), str(secret), options.get("session_token") or options.get("token"))
    return session.get_credentials()


def read_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """The storage options but the client's and retries', under their plain names (`AWS_REGION` → `region`); a
    BucketError names any that reads do not follow (the fsspec reads of converters/location.py neither)."""
    plain = {k.lower().removeprefix("aws_"): v for k, v in options.items() if k not in ("client_options", "retry_config")}
    others = sorted(set(plain) - FOLLOWED - UNUSED)
    if others:
        raise BucketError(f"{url}: the site readers do not take the storage option(s) {', '.join(others)} (they take "
                          f"{', '.join(sorted(FOLLOWED))}); credentials from a role, web identity or container come "
                          "from the environment botocore reads (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, ...)")
    return plain


def truth(value: Any) -> bool:
    """A storage option's truth: true/false as JSON gives them, or the strings obstore takes."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def _error(body: bytes) -> str:
    """An S3 error document's code and message, on one line."""
    text = body[:2000].decode("utf-8", "replace")
    found = {tag: re.search(f"<{tag}>(.*?)</{tag}>", text, re.S) for tag in ("Code", "Message")}
    return ": ".join(m[1].strip() for m in found.values() if m) or text.strip()[:200]
