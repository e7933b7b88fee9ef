"""Where data lives: a local path or a bucket URL (s3://, gs://, https://), and the stores that reach it.

Buckets are reached with obstore (one request per read, measured faster than s3fs, which sends a HEAD
before each GET); credentials and endpoints come from each cloud's standard environment and config,
plus `storage_options` for things like an endpoint URL or anonymous access.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REMOTE_SCHEMES = ("s3", "s3a", "gs", "gcs", "http", "https")


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
        """An obstore store rooted at this URL (remote locations only)."""
        from obstore.store import from_url

        options = dict(self.options)
        client = dict(options.pop("client_options", {}))
        endpoint = options.get("endpoint", options.get("endpoint_url", os.environ.get("AWS_ENDPOINT_URL", "")))
        if str(endpoint).startswith("http://") or self.url.startswith("http://"):
            client.setdefault("allow_http", True)
        if "endpoint_url" in options:
            options["endpoint"] = options.pop("endpoint_url")
        return from_url(self.url.rstrip("/"), client_options=client or None, **options)


    def fsspec_options(self) -> dict[str, Any]:
        """The storage options in fsspec's words (`endpoint` → `endpoint_url`, `skip_signature` → `anon`)."""
        if self.url.startswith(("http://", "https://")):
            return {}
        options = {k: v for k, v in self.options.items() if k != "client_options"}
        if "endpoint" in options:
            options["endpoint_url"] = options.pop("endpoint")
        if options.pop("skip_signature", False):
            options["anon"] = True
        return options

    def fsspec(self) -> tuple[Any, str]:
        """A fresh synchronous fsspec filesystem and path for this URL: fork-safe, unlike obstore's runtime."""
        import fsspec

        return fsspec.core.url_to_fs(self.url.rstrip("/"), skip_instance_cache=True, **self.fsspec_options())

    def zarr_fsspec_store(self, read_only: bool = True):
        """A zarr store over fsspec for this URL."""
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url.rstrip("/"), storage_options=self.fsspec_options(), read_only=read_only)


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

    from converters.errors import PlatezarrError

    parent, _, name = parsed.url.rstrip("/").rpartition("/")
    target = Path(tempfile.mkdtemp(prefix="platezarr-")) / name
    store = Location(parent, None, parsed.options).object_store()
    try:
        objects = [m["path"] for batch in obstore.list(store, prefix=f"{name}/") for m in batch]
        for key in objects or [name]:
            path = target.parent / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes(obstore.get(store, key).bytes()))
    except Exception as exc:
        raise PlatezarrError(f"{parsed.url}: cannot read: {exc}") from None
    return target
