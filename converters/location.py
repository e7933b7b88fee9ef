"""Where data lives: a local path or a bucket URL (s3://, gs://, https://), and the stores that reach it.

Buckets are reached with obstore (one request per read, measured faster than s3fs, which sends a HEAD
before each GET); credentials and endpoints come from each cloud's standard environment and config,
plus `storage_options` for things like an endpoint URL or anonymous access.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.errors import BucketError
from converters.s3reads import read_options, truth

if TYPE_CHECKING:
    from zarr.storage import FsspecStore

REMOTE_SCHEMES = ("s3", "s3a", "gs", "gcs", "http", "https")

# The storage option keys obstore accepts (its S3Config, GCSConfig, ClientConfig and RetryConfig), as of obstore 0.12;
# S3 keys may also be spelled with an `aws_` prefix, GCS keys with `google_`, in any case.
S3_KEYS = frozenset({
    "access_key_id", "secret_access_key", "session_token", "token", "region", "default_region", "bucket", "bucket_name",
    "endpoint", "endpoint_url", "skip_signature", "virtual_hosted_style_request", "unsigned_payload", "request_payer",
    "checksum_algorithm", "conditional_put", "copy_if_not_exists", "disable_tagging", "disable_bulk_delete",
    "metadata_endpoint", "imdsv1_fallback", "s3_express", "container_credentials_relative_uri",
    "container_credentials_full_uri", "container_authorization_token_file", "role_arn", "role_session_name",
    "sts_endpoint", "web_identity_token_file", "server_side_encryption", "sse_kms_key_id", "sse_bucket_key_enabled",
    "sse_customer_key_base64",
})
GCS_KEYS = frozenset({
    "service_account", "service_account_path", "service_account_key", "application_credentials", "bearer_token",
    "bucket", "bucket_name", "base_url", "skip_signature",
})
CLIENT_KEYS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "timeout", "read_timeout", "pool_idle_timeout",
    "pool_max_idle_per_host", "default_content_type", "default_headers", "http1_only", "http2_only",
    "http2_keep_alive_interval", "http2_keep_alive_timeout", "http2_keep_alive_while_idle", "proxy_url",
    "proxy_ca_certificate", "proxy_excludes", "randomize_addresses", "root_certificate", "user_agent",
})
RETRY_KEYS = frozenset({"max_retries", "retry_timeout", "backoff"})
BACKOFF_KEYS = frozenset({"init_backoff", "max_backoff", "base"})
FSSPEC_NAMES = {"anon": "skip_signature", "key": "access_key_id", "secret": "secret_access_key",
                "client_kwargs": "client_options"}  # what s3fs users will try first
# Short waits unless the options say otherwise, so an unreachable bucket fails in well under a minute: object_store's
# own connect and request timeouts, and 3 retries (as AWS's SDKs default to) within 30 s, not 10 within 180 s.
CLIENT_DEFAULTS = {"connect_timeout": "5s", "timeout": "30s"}
BACKOFF_DEFAULTS: dict[str, Any] = {"init_backoff": 0.1, "max_backoff": 5.0}
RETRY_DEFAULTS: dict[str, Any] = {"max_retries": 3, "retry_timeout": 30.0, "backoff": BACKOFF_DEFAULTS}


@dataclass(frozen=True)
class Location:
    """A parsed location: `path` for local data, else the URL and the options to reach it."""

    url: str
    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def read_only_scheme(self) -> bool:
        return self.url.startswith(("http://", "https://"))

    def object_store(self):
        """An obstore store rooted at this URL (remote locations only); a BucketError names an option it cannot take.
        Waits are short unless `client_options` or `retry_config` say otherwise (CLIENT_DEFAULTS, RETRY_DEFAULTS)."""
        from obstore.exceptions import BaseError
        from obstore.store import from_url

        try:
            config, client, retry = self.store_settings()
            return from_url(self.url.rstrip("/"), config=config or None, client_options=client,  # type: ignore[call-overload]
                            retry_config=retry)  # options checked above, per scheme, against obstore's key lists
        except (BaseError, TypeError, ValueError) as exc:
            raise BucketError(f"{self.url}: cannot use the storage options ({', '.join(self.options)}): "
                              f"{first_line(exc)}; values are strings or true/false, durations like \"10s\" (in "
                              "retry_config: max_retries a whole number, times in seconds)") from exc

    def store_settings(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The storage options checked and split as obstore takes them: config, client options, retry config."""
        config = dict(self.options)
        client = CLIENT_DEFAULTS | _checked(self.url, "client_options", config.pop("client_options", {}), CLIENT_KEYS)
        retry = _checked(self.url, "retry_config", config.pop("retry_config", {}), RETRY_KEYS)
        backoff = _checked(self.url, "retry_config.backoff", retry.get("backoff", {}), BACKOFF_KEYS)
        retry = _durations(RETRY_DEFAULTS | retry | {"backoff": BACKOFF_DEFAULTS | backoff})
        names = {key: _config_key(self.url, key, value) for key, value in config.items()}
        endpoint = next((config[k] for k, name in names.items() if name in ("endpoint", "endpoint_url")),
                        os.environ.get("AWS_ENDPOINT_URL", "") if self.url.startswith(("s3", "s3a")) else "")
        if str(endpoint).startswith("http://") or self.url.startswith("http://"):
            client.setdefault("allow_http", True)
        return config, client, retry

    def fsspec_options(self) -> dict[str, Any]:
        """The storage options in fsspec's words (`endpoint` → `endpoint_url`, `skip_signature` → `anon`; on S3,
        s3fs's names for credentials, region and requester-pays; options that only concern writes dropped)."""
        if self.url.startswith(("http://", "https://")):
            return {}
        options = {k: v for k, v in self.options.items() if k not in ("client_options", "retry_config")}
        if self.url.startswith(("s3://", "s3a://")):
            return _s3fs_options(self.url, options)
        if "endpoint" in options:
            options["endpoint_url"] = options.pop("endpoint")
        if options.pop("skip_signature", False):
            options["anon"] = True
        return options

    def fsspec(self) -> tuple[Any, str]:
        """A fresh synchronous fsspec filesystem and path for this URL: fork-safe, unlike obstore's runtime."""
        import fsspec

        return fsspec.core.url_to_fs(self.url.rstrip("/"), skip_instance_cache=True, **self.fsspec_options())

    def zarr_fsspec_store(self, read_only: bool = True) -> FsspecStore:
        """A zarr store over fsspec for this URL."""
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url.rstrip("/"), storage_options=self.fsspec_options(), read_only=read_only)


def _s3fs_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """S3 storage options (obstore's names, any case, `aws_` prefixed or not) as s3fs takes them; a BucketError
    names any the site readers do not follow (converters/s3reads.py reads the same options the same way)."""
    plain = read_options(url, options)
    names = {"access_key_id": "key", "secret_access_key": "secret", "session_token": "token", "token": "token",
             "endpoint": "endpoint_url", "endpoint_url": "endpoint_url"}
    out: dict[str, Any] = {names[k]: v for k, v in plain.items() if k in names}
    region = plain.get("region") or plain.get("default_region")
    if region:
        out["client_kwargs"] = {"region_name": str(region)}
    if truth(plain.get("skip_signature", False)):
        out["anon"] = True
    if truth(plain.get("request_payer", False)):
        out["requester_pays"] = True
    if truth(plain.get("virtual_hosted_style_request", False)):
        out["config_kwargs"] = {"s3": {"addressing_style": "virtual"}}
    return out


# Where clouds' SDKs look for credentials last (instance and container metadata): a failure there means none were found.
CREDENTIAL_SERVICES = re.compile(r"169\.254\.169\.254|169\.254\.170\.2|/latest/api/token|/latest/meta-data|"
                                 r"computeMetadata")
NO_CREDENTIALS = {
    "s3": "found no AWS credentials: none in --storage-options or the environment (AWS_ACCESS_KEY_ID and "
          "AWS_SECRET_ACCESS_KEY, AWS_WEB_IDENTITY_TOKEN_FILE) and no instance metadata service gave any; export "
          "them (~/.aws profiles are not read: `eval $(aws configure export-credentials --format env)` exports a "
          "profile's), or pass --storage-options '{\"skip_signature\": true}' for a public bucket",
    "gs": "found no Google credentials: none in --storage-options or the environment (GOOGLE_APPLICATION_CREDENTIALS "
          "or GOOGLE_SERVICE_ACCOUNT, a service account key file) and no metadata server gave any; set one, or pass "
          "--storage-options '{\"skip_signature\": true}' for a public bucket",
}
DENIED = re.compile(r"\b40[13] (Forbidden|Unauthorized)\b")
UNREACHABLE = re.compile(r"error sending request|connect error|connection refused|dns error|timed out", re.IGNORECASE)


def _checked(url: str, where: str, value: Any, keys: frozenset[str]) -> dict[str, Any]:
    """`value` as a dict if it is a JSON object of keys obstore takes under `where`, else a BucketError."""
    if not isinstance(value, dict):
        raise BucketError(f'{url}: storage option "{where}" must be a JSON object, not {value!r}')
    unknown = sorted(set(value) - keys)
    if unknown:
        raise BucketError(f'{url}: unknown key {unknown[0]!r} in storage option "{where}"; it accepts '
                          f"{', '.join(sorted(keys))}")
    return dict(value)


def _config_key(url: str, key: str, value: Any) -> str:
    """The plain name of a top-level storage option of this URL's store, or a BucketError saying where it belongs."""
    s3, gcs = ("S3", S3_KEYS, "aws_"), ("GCS", GCS_KEYS, "google_")
    http: tuple[str, frozenset[str], str] = ("HTTP(S)", frozenset(), "")
    kind, keys, prefix = {"s3": s3, "s3a": s3, "gs": gcs, "gcs": gcs}.get(url.split("://", 1)[0], http)
    name = key.lower().removeprefix(prefix) if prefix else key
    if name in keys:
        return name
    if name in CLIENT_KEYS or name in RETRY_KEYS:
        group = "client_options" if name in CLIENT_KEYS else "retry_config"
        shown = json.dumps(value) if isinstance(value, bool | int | float) else "..."  # never echo a secret
        raise BucketError(f"{url}: storage option {key!r} belongs under \"{group}\": pass "
                          f"'{{\"{group}\": {{\"{name}\": {shown}}}}}'")
    if key in FSSPEC_NAMES:
        raise BucketError(f"{url}: storage option {key!r} is s3fs's name; obstore's is {FSSPEC_NAMES[key]!r}")
    accepted = f"{kind} stores accept {', '.join(sorted(keys))}" if keys else f"{kind} URLs take no other options"
    raise BucketError(f"{url}: unknown storage option {key!r}; {accepted}, and \"client_options\" "
                      f"({', '.join(sorted(CLIENT_KEYS))}) and \"retry_config\" (max_retries, retry_timeout, backoff)")


def _durations(retry: dict[str, Any]) -> dict[str, Any]:
    """A retry config with its times, seconds as JSON gives them, as the timedeltas obstore takes."""
    def seconds(value: Any) -> timedelta:
        return value if isinstance(value, timedelta) else timedelta(seconds=value)

    backoff = retry["backoff"]
    return retry | {"retry_timeout": seconds(retry["retry_timeout"]),
                    "backoff": backoff | {k: seconds(v) for k, v in backoff.items() if k != "base"}}


def first_line(exc: BaseException) -> str:
    """An obstore error's message on one line, without its debug dump, an S3 XML error cut to its code and message."""
    text = str(exc).split("Debug source:", 1)[0]
    text = re.sub(r"<\?xml.*?<Code>(.*?)</Code>\s*<Message>(.*?)</Message>.*", r"\1: \2", text, flags=re.DOTALL)
    return " ".join(text.split()).rstrip(".")


def bucket_error(url: str, doing: str, exc: BaseException, store: Any = None) -> BucketError:
    """A BucketError for an obstore failure to `doing` at `url`: why, in one line, and what to do about it.
    `store`, the obstore store (or a zarr ObjectStore of one), tells the waits it was given."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    reason = first_line(exc)
    scheme = {"s3a": "s3", "gcs": "gs"}.get(url.split("://", 1)[0], url.split("://", 1)[0])
    if CREDENTIAL_SERVICES.search(reason) and scheme in NO_CREDENTIALS:
        advice = NO_CREDENTIALS[scheme]
    elif isinstance(exc, (PermissionDeniedError, UnauthenticatedError)) or DENIED.search(reason):
        advice = f"access denied: check that the credentials in use may {doing} there"
    elif UNREACHABLE.search(reason):
        advice = (f"check the URL, the endpoint (--storage-options endpoint, or AWS_ENDPOINT_URL) and the network; "
                  f"gave up after {_waits(store)}: raise them with --storage-options, e.g. "
                  "'{\"client_options\": {\"connect_timeout\": \"30s\"}, \"retry_config\": {\"max_retries\": 10, "
                  "\"retry_timeout\": 180}}' if the network is slow")
    else:
        advice = "check the URL and the storage options"
    return BucketError(f"{url}: cannot {doing}: {reason}; {advice}")


def _waits(store: Any) -> str:
    """The timeouts and retries an obstore store (or a zarr ObjectStore of one) was given, in words."""
    store = getattr(store, "store", store)
    client = getattr(store, "client_options", None) or CLIENT_DEFAULTS
    retry = getattr(store, "retry_config", None) or _durations(RETRY_DEFAULTS)
    return (f"{retry['max_retries']} retries within {retry['retry_timeout'].total_seconds():g} s "
            f"(connect timeout {client.get('connect_timeout', '5s')}, request timeout {client.get('timeout', '30s')})")


@contextmanager
def bucket_errors(url: str, doing: str, store: Any = None) -> Iterator[None]:
    """Turn an obstore error in the block into a BucketError naming `url` and what failed (see `bucket_error`)."""
    from obstore.exceptions import BaseError

    try:
        yield
    except BaseError as exc:
        raise bucket_error(url, doing, exc, store) from exc


def parse_location(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Location:
    """Parse a path or URL; `file://` and plain paths are local."""
    text = os.fspath(location)
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme in ("", "file"):
        return Location(text, Path(text.removeprefix("file://")).expanduser().resolve(), storage_options or {})
    if scheme not in REMOTE_SCHEMES:
        from converters.errors import PlatezarrError

        raise PlatezarrError(f"{text}: unsupported URL scheme {scheme!r}; use a path, file://, s3://, gs:// or https://")
    return Location(text, None, storage_options or {})


def local_copy(location: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Path:
    """A local path for a small input (a metadata table, or a folder of them): remote ones are downloaded."""
    parsed = parse_location(location, storage_options)
    if parsed.path is not None:
        return parsed.path
    import obstore

    parent, _, name = parsed.url.rstrip("/").rpartition("/")
    target = Path(tempfile.mkdtemp(prefix="platezarr-")) / name
    store = Location(parent, None, parsed.options).object_store()
    try:
        objects = [m["path"] for batch in obstore.list(store, prefix=f"{name}/") for m in batch]
        for key in objects or [name]:
            path = target.parent / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(obstore.get(store, key).bytes()))
    except Exception as exc:  # obstore raises per-cloud errors; all mean the download failed
        raise bucket_error(parsed.url, "download it", exc, store) from exc
    return target
