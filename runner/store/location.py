"""Where a run lives: a local path, `s3://bucket/prefix` or `gs://bucket/prefix`, via `pyarrow.fs`.

    loc = resolve("s3://nightly/vlbench")       # a Location: file system + path + the user's URI
    loc.child("suite=demo").exists()

Configuration comes from the environment, as the AWS and Google tools read it:
- S3: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`; e.g. `http://127.0.0.1:9000` for MinIO or
  moto: its scheme decides http or https), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
  `AWS_SESSION_TOKEN`, `AWS_REGION` (or `AWS_DEFAULT_REGION`). Without them, the AWS SDK's own
  chain (config files, instance roles) applies.
- GCS: `STORAGE_EMULATOR_HOST` for an emulator (anonymous, e.g. `http://127.0.0.1:4443`: its
  scheme decides http or https, `host:port` alone is http); otherwise Google's default
  credentials.
Both are tested end to end: S3 against a local moto server (`tests/test_storage.py`), GCS against
the tests' own fake of the JSON API (`tests/gcs_fake.py`, `tests/test_storage_gcs.py`).

Credentials never appear in a message or a repr (`scrub`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from runner.errors import RunError, UsageError

__all__ = ["REMOTE_SCHEMES", "Location", "is_remote", "resolve", "scrub"]

REMOTE_SCHEMES: Final = ("s3", "gs", "gcs")


@dataclass(frozen=True, slots=True)
class Location:
    """A place on a file system: `fs` (a `pyarrow.fs.FileSystem`), its `path`, the user's `uri`.

    For a local path, `path` is absolute and `uri` is the path as given.
    """

    fs: Any  # pyarrow.fs.FileSystem (pyarrow ships no type hints)
    path: str
    uri: str

    @property
    def remote(self) -> bool:
        return not isinstance(self.fs, pafs.LocalFileSystem)

    def child(self, *parts: str) -> Location:
        """The location `parts` below this one."""
        tail = "/".join(p.strip("/") for p in parts if p)
        return Location(
            self.fs, f"{self.path.rstrip('/')}/{tail}", f"{self.uri.rstrip('/')}/{tail}"
        )

    def exists(self) -> bool:
        return bool(self.fs.get_file_info(self.path).type != pafs.FileType.NotFound)

    def is_file(self) -> bool:
        return bool(self.fs.get_file_info(self.path).type == pafs.FileType.File)

    def read_bytes(self) -> bytes:
        """The whole file (for small files: manifests)."""
        try:
            with self.fs.open_input_stream(self.path) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            raise RunError(f"{self.uri}: missing") from None
        except (OSError, pa.ArrowException) as exc:
            raise RunError(f"{self.uri}: cannot be read ({scrub(str(exc))})") from None

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether `location` names object storage (`s3://`, `gs://`) rather than a local path."""
    if isinstance(location, os.PathLike):
        return False
    scheme = urlsplit(location).scheme.lower()
    return scheme in REMOTE_SCHEMES


def resolve(
    location: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Location:
    """The file system and path of `location`: `s3://bucket/prefix`, `gs://bucket/prefix`, a path.

    `environ` replaces `os.environ` for the configuration (tests). Raises `UsageError` for an
    unknown scheme or a URI without a bucket.
    """
    if isinstance(location, os.PathLike) or "://" not in str(location):
        local = Path(location)
        return Location(pafs.LocalFileSystem(), str(local.absolute()), str(location))
    text = str(location)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return Location(pafs.LocalFileSystem(), parts.path, text)
    if scheme not in REMOTE_SCHEMES:
        raise UsageError(f"{text}: unknown storage scheme {scheme!r} (use s3://, gs:// or a path)")
    if not parts.netloc:
        raise UsageError(f"{text}: no bucket (write {scheme}://bucket/prefix)")
    bucket_path = f"{parts.netloc}{parts.path}".rstrip("/")
    env = os.environ if environ is None else environ
    try:
        fs = _s3(env) if scheme == "s3" else _gcs(env)
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise UsageError(f"{scheme}:// storage cannot be configured: {scrub(str(exc))}") from None
    return Location(fs, bucket_path, text.rstrip("/"))


def _s3(env: Mapping[str, str]) -> Any:
    options: dict[str, Any] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = url.netloc
        options["scheme"] = url.scheme or "https"
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options["access_key"] = key
        options["secret_key"] = secret
        if env.get("AWS_SESSION_TOKEN"):
            options["session_token"] = env["AWS_SESSION_TOKEN"]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region or endpoint:
        options["region"] = region or "us-east-1"  # a custom endpoint ignores it, the SDK won't
    return pafs.S3FileSystem(**options)


def _gcs(env: Mapping[str, str]) -> Any:
    emulator = env.get("STORAGE_EMULATOR_HOST")
    if emulator:
        url = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
        return pafs.GcsFileSystem(anonymous=True, endpoint_override=url.netloc, scheme=url.scheme)
    return pafs.GcsFileSystem()


def scrub(text: str) -> str:
    """`text` on one line, without anything that looks like a credential (object-store errors)."""
    text = " ".join(text.split())
    return re.sub(r"(?i)(secret|token|signature|credential)[^ ,;]*", r"\1=<hidden>", text)[:300]
