"""A small fake of the Google Cloud Storage JSON API: what `pyarrow.fs.GcsFileSystem` calls.

    with fake_gcs_process() as endpoint:        # "http://127.0.0.1:<free port>"
        create_bucket(endpoint, "nightly")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)   # then gs://nightly/... works

Why it exists: the public emulators hang under pyarrow. gcp-storage-emulator never finishes
pyarrow's ranged reads (`Range: bytes=a-b` on `?alt=media`), and fake-gcs-server stalls on object
names containing `=`, which every hive path (`suite=…/run_date=…/run_id=…`) has. Neither is a
dependency: this file is the test suite's own, stdlib only, objects in memory.

Why a child process and not a thread (as moto's server is): in pyarrow 26, `NativeFile.size()`
and every other call that checks `NativeFile.closed` on a GCS file lets the file open its read
stream, an HTTP request, while holding the GIL; a server thread in the same interpreter then
never gets the GIL to answer it, and both wait for ever. In its own process the server has its
own GIL.

The subset, found by logging what google-cloud-cpp sends (`python tests/gcs_fake.py --log`):
- `GET /storage/v1/b/<bucket>` (is the bucket there; a 403 for a bucket inserted
  `objects_only`, as a key with object roles only gets), `POST /storage/v1/b` (insert, tests);
- `GET /storage/v1/b/<bucket>/o/<object>`: metadata, `generation` pinning a version;
- `GET …/o/<object>?alt=media`, whole (200) or `Range: bytes=a-b` / `bytes=a-` (206 with
  `Content-Range`; 416 past the end);
- `GET /storage/v1/b/<bucket>/o` with `prefix`, `delimiter`, `includeTrailingDelimiter`,
  `maxResults`, `pageToken` (pages of `page_size` entries, so paging is exercised);
- `POST /upload/storage/v1/b/<bucket>/o?uploadType=resumable&name=…`, a `Location` to `PUT`
  chunks to with `Content-Range: bytes a-b/*` (308 with `Range`), `bytes a-b/<total>` or
  `bytes */<total>` (done: the object); `uploadType=multipart` (directory markers, with
  `ifGenerationMatch=0`: a 412 when the object exists);
- `POST …/o/<src>/rewriteTo/b/<bucket>/o/<dst>` (a move's copy, done in one call); `DELETE`.
Object names arrive percent-encoded inside one path segment (`%2F` for `/`, `%3D` for `=`): the
path is split first, each segment decoded once. Objects carry the fields google-cloud-cpp parses:
`size`, `generation`, `metageneration` as strings, RFC 3339 times, custom `metadata` (pyarrow
marks directories with it), `md5Hash` and `crc32c` (base64, big-endian; a `crc32c` the client
declares on upload is checked). Every answer has an exact Content-Length, on an HTTP/1.1
keep-alive connection; any other call is a 501 naming it, so a client that needs more fails
instead of hanging.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import re
import secrets
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlsplit

__all__ = ["FakeGcs", "create_bucket", "crc32c", "fake_gcs_process"]

_RANGE: Final = re.compile(r"bytes=(\d+)-(\d*)$")
_CONTENT_RANGE: Final = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)$")
_OCTETS: Final = "application/octet-stream"
_OBJECTS_ONLY: Final = "fake-gcs-objects-only"
_NO: Final[Mapping[str, str]] = {}


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1  # Castagnoli, reflected
        table.append(n)
    return table


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: bytes) -> str:
    """The base64 CRC-32C (Castagnoli, big-endian) of `data`, as GCS spells an object's."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return base64.b64encode((crc ^ 0xFFFFFFFF).to_bytes(4, "big")).decode()


class _Answer(Exception):
    """An error answer, raised anywhere below a request; sent as GCS's JSON error body."""

    def __init__(
        self, status: int, message: str, reason: str = "invalid", headers: Mapping[str, str] = _NO
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers


def _not_served(method: str, path: str) -> _Answer:
    return _Answer(501, f"the fake does not serve {method} {path}", "notImplemented")


@dataclass(frozen=True)
class _Object:
    """One object version; the checksums computed once."""

    bucket: str
    name: str
    data: bytes
    generation: int
    content_type: str
    metadata: Mapping[str, str]
    crc32c: str = ""
    created: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    )

    def resource(self) -> dict[str, Any]:
        """The JSON object resource, as the service spells it."""
        when = self.created.replace("+00:00", "Z")
        resource = {
            "kind": "storage#object",
            "id": f"{self.bucket}/{self.name}/{self.generation}",
            "name": self.name,
            "bucket": self.bucket,
            "generation": str(self.generation),
            "metageneration": "1",
            "contentType": self.content_type,
            "storageClass": "STANDARD",
            "size": str(len(self.data)),
            "md5Hash": base64.b64encode(hashlib.md5(self.data).digest()).decode(),
            "crc32c": self.crc32c,
            "etag": f"CI{self.generation}",
            "timeCreated": when,
            "updated": when,
        }
        return resource | ({"metadata": dict(self.metadata)} if self.metadata else {})


@dataclass
class _Upload:
    """A resumable upload session: its target and the bytes received so far."""

    bucket: str
    name: str
    meta: Mapping[str, Any]
    data: bytearray = field(default_factory=bytearray)


class FakeGcs:
    """The service: buckets of objects in memory; `start` serves them on 127.0.0.1 from a thread.

    Run it in its own process (`fake_gcs_process`), never in the interpreter that calls pyarrow.
    `page_size` is the most entries a list page holds; `log` prints every call on stderr.
    """

    def __init__(self, *, page_size: int = 3, log: bool = False) -> None:
        self.page_size, self.log = page_size, log
        self.buckets: dict[str, dict[str, _Object]] = {}
        self.uploads: dict[str, _Upload] = {}
        self.objects_only: set[str] = set()  # buckets whose metadata the caller may not read
        self.lock = threading.Lock()  # one call at a time: the handler threads share the store
        self._generation = 1_700_000_000_000_000
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"gcs": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def endpoint(self) -> str:
        """`http://127.0.0.1:<port>`, what `STORAGE_EMULATOR_HOST` takes."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- the store (called under `lock`) ---------------------------------------------------

    def bucket(self, name: str) -> dict[str, _Object]:
        if name not in self.buckets:
            raise _Answer(404, f"The specified bucket does not exist: {name}", "notFound")
        return self.buckets[name]

    def get(self, bucket: str, name: str, params: Mapping[str, str]) -> _Object:
        obj = self.bucket(bucket).get(name)
        if obj is None or params.get("generation", str(obj.generation)) != str(obj.generation):
            raise _Answer(404, f"No such object: {bucket}/{name}", "notFound")
        return obj

    def put(
        self,
        bucket: str,
        name: str,
        data: bytes,
        meta: Mapping[str, Any],
        params: Mapping[str, str],
    ) -> _Object:
        objects = self.bucket(bucket)
        if not name:
            raise _Answer(400, "Required: the object name", "required")
        current = str(objects[name].generation) if name in objects else "0"
        if params.get("ifGenerationMatch", current) != current:
            raise _Answer(412, f"ifGenerationMatch: {name} is at {current}", "conditionNotMet")
        checksum = crc32c(data)
        if meta.get("crc32c", checksum) != checksum:
            raise _Answer(400, f"Provided CRC32C {meta['crc32c']} does not match the data")
        self._generation += 1
        kind, custom = meta.get("contentType") or _OCTETS, meta.get("metadata") or {}
        objects[name] = _Object(bucket, name, data, self._generation, kind, custom, checksum)
        return objects[name]

    def bucket_resource(self, name: str) -> dict[str, Any]:
        self.bucket(name)
        if name in self.objects_only:  # a key granted object roles only: no storage.buckets.get
            raise _Answer(403, f"caller does not have storage.buckets.get on {name}", "forbidden")
        return {"kind": "storage#bucket", "id": name, "name": name, "metageneration": "1"}

    def insert_bucket(self, body: Mapping[str, Any]) -> dict[str, Any]:
        name = str(body.get("name", ""))
        if name in self.buckets:
            raise _Answer(409, f"The bucket {name} already exists", "conflict")
        self.buckets[name] = {}
        if body.get("labels", {}).get(_OBJECTS_ONLY) == "true":
            self.objects_only.add(name)
            return {"kind": "storage#bucket", "id": name, "name": name}
        return self.bucket_resource(name)

    def list(self, bucket: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One page of the objects (and, with a delimiter, the prefixes) under `prefix`."""
        objects = self.bucket(bucket)
        prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
        trailing = params.get("includeTrailingDelimiter") == "true"
        entries: dict[str, _Object | None] = {}  # sort key -> an object, or None for a prefix
        for name in sorted(n for n in objects if n.startswith(prefix)):
            cut = name.find(delimiter, len(prefix)) if delimiter else -1
            if cut < 0:
                entries[name] = objects[name]
                continue
            common = name[: cut + len(delimiter)]
            entries.setdefault(common, None)
            if trailing and common == name:  # "dir/" itself: listed as a prefix and an object
                entries[name + "\0"] = objects[name]
        keys = sorted(entries)
        if params.get("pageToken"):
            after = base64.urlsafe_b64decode(params["pageToken"]).decode()
            keys = [k for k in keys if k > after]
        size = min(int(params.get("maxResults", self.page_size)), self.page_size)
        page = keys[:size]
        answer: dict[str, Any] = {
            "kind": "storage#objects",
            "items": [obj.resource() for k in page if (obj := entries[k]) is not None],
            "prefixes": [k for k in page if entries[k] is None],
        }
        if len(keys) > size:
            answer["nextPageToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return answer

    def upload_chunk(self, upload_id: str, content_range: str, chunk: bytes) -> _Object | int:
        """Append a chunk of a resumable upload: the object once complete, else bytes so far."""
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise _Answer(404, f"No such upload session: {upload_id}", "notFound")
        match = _CONTENT_RANGE.match(content_range)
        if match is None:
            raise _Answer(400, f"Bad Content-Range: {content_range!r}", "badRequest")
        first, last, total = match.groups()
        if first is not None:
            if int(first) != len(upload.data) or int(last) - int(first) + 1 != len(chunk):
                raise _Answer(400, f"Chunk {content_range} does not follow byte {len(upload.data)}")
            upload.data += chunk
        if total == "*":
            return len(upload.data)
        if int(total) != len(upload.data):
            raise _Answer(400, f"Upload declared {total} bytes, {len(upload.data)} were sent")
        del self.uploads[upload_id]
        return self.put(upload.bucket, upload.name, bytes(upload.data), upload.meta, {})


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON metadata and the media of a `multipart/related` upload body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise _Answer(400, "A multipart upload without a boundary", "badRequest")
    parts = body.split(b"--" + match.group(1).encode())[1:-1]  # the last is the closing "--"
    if len(parts) != 2:
        raise _Answer(400, f"A multipart upload of {len(parts)} parts, not 2", "badRequest")
    meta, media = (p.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for p in parts)
    return json.loads(meta), media


class _Handler(BaseHTTPRequestHandler):
    """Parses one HTTP request, answers it from `gcs` under its lock."""

    gcs: FakeGcs
    protocol_version = "HTTP/1.1"  # keep-alive, as libcurl expects
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits for the
    # client's delayed ACK, 40 ms on every call.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.gcs.log:
            print(f"fake-gcs: {format % args}", file=sys.stderr, flush=True)

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        # Split before decoding: a `/` inside an object name arrives as %2F.
        path = [unquote(segment) for segment in url.path.strip("/").split("/")]
        with self.gcs.lock:
            try:
                if path[:3] == ["upload", "storage", "v1"]:
                    self._upload(path[3:], params, body)
                elif path[:3] == ["storage", "v1", "b"]:
                    self._storage(path[3:], params, body)
                else:
                    raise _not_served(self.command, self.path)
            except _Answer as error:
                self._error(error)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def _storage(self, path: list[str], params: dict[str, str], body: bytes) -> None:
        gcs, method = self.gcs, self.command
        if not path and method == "POST":
            return self._json(gcs.insert_bucket(json.loads(body or b"{}")))
        if len(path) == 1 and method == "GET":
            return self._json(gcs.bucket_resource(path[0]))
        if len(path) == 2 and path[1] == "o" and method == "GET":
            return self._json(gcs.list(path[0], params))
        if len(path) == 3 and path[1] == "o":
            return self._object(path[0], path[2], params)
        # <bucket>/o/<src>/rewriteTo/b/<bucket>/o/<dst>
        if len(path) == 8 and path[1] == "o" and path[3:5] == ["rewriteTo", "b"] and path[6] == "o":
            src = gcs.get(path[0], path[2], {})
            meta = {"contentType": src.content_type, "metadata": src.metadata}
            obj = gcs.put(path[5], path[7], src.data, meta, params)
            size = str(len(obj.data))
            done = dict(done=True, totalBytesRewritten=size, objectSize=size)
            return self._json(
                {"kind": "storage#rewriteResponse", **done, "resource": obj.resource()}
            )
        raise _not_served(method, self.path)

    def _object(self, bucket: str, name: str, params: dict[str, str]) -> None:
        if self.command == "GET" and params.get("alt") == "media":
            return self._media(self.gcs.get(bucket, name, params))
        if self.command == "GET":
            return self._json(self.gcs.get(bucket, name, params).resource())
        if self.command == "DELETE":
            self.gcs.get(bucket, name, params)
            del self.gcs.buckets[bucket][name]
            return self._send(204, b"")
        raise _not_served(self.command, self.path)

    def _media(self, obj: _Object) -> None:
        size, asked = len(obj.data), self.headers.get("Range", "")
        headers = {"x-goog-generation": str(obj.generation)}
        match = _RANGE.match(asked.strip())
        if match is None:  # the whole object: its hashes let the client check what it read
            headers["x-goog-hash"] = f"crc32c={obj.crc32c},md5={obj.resource()['md5Hash']}"
            return self._send(200, obj.data, obj.content_type, headers)
        start = int(match.group(1))
        end = min(int(match.group(2) or size - 1), size - 1)
        if start >= size:
            past = {"Content-Range": f"bytes */{size}"}
            raise _Answer(416, f"{asked}: past the end", "requestedRangeNotSatisfiable", past)
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(206, obj.data[start : end + 1], obj.content_type, headers)

    def _upload(self, path: list[str], params: dict[str, str], body: bytes) -> None:
        gcs, method, kind = self.gcs, self.command, params.get("uploadType", "")
        if len(path) != 3 or path[0] != "b" or path[2] != "o":
            raise _not_served(method, self.path)
        bucket = path[1]
        if method == "POST" and kind == "multipart":
            meta, media = _multipart(self.headers.get("Content-Type", ""), body)
            name = params.get("name") or meta.get("name", "")
            return self._json(gcs.put(bucket, name, media, meta, params).resource())
        if method == "POST" and kind == "resumable":
            gcs.bucket(bucket)
            meta = json.loads(body) if body.strip() else {}
            name = params.get("name") or meta.get("name", "")
            if not name:
                raise _Answer(400, "Required: the object name", "required")
            upload_id = secrets.token_hex(8)
            gcs.uploads[upload_id] = _Upload(bucket, name, meta)
            location = f"{gcs.endpoint}/upload/storage/v1/b/{quote(bucket, safe='')}/o"
            location += f"?uploadType=resumable&upload_id={upload_id}"
            return self._send(200, b"", headers={"Location": location})
        if method == "PUT" and kind == "resumable":
            whole = f"bytes 0-{len(body) - 1}/{len(body)}" if body else "bytes */0"
            content_range = self.headers.get("Content-Range", whole)
            done = gcs.upload_chunk(params.get("upload_id", ""), content_range, body)
            if isinstance(done, _Object):
                return self._json(done.resource())
            return self._send(308, b"", headers={"Range": f"bytes=0-{done - 1}"} if done else {})
        raise _not_served(method, self.path)

    def _json(self, payload: Mapping[str, Any]) -> None:
        self._send(200, json.dumps(payload).encode(), "application/json; charset=UTF-8")

    def _error(self, error: _Answer) -> None:
        detail = {
            "code": error.status,
            "message": error.message,
            "errors": [{"domain": "global", "reason": error.reason, "message": error.message}],
        }
        payload = json.dumps({"error": detail}).encode()
        self._send(error.status, payload, "application/json; charset=UTF-8", error.headers)

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


def create_bucket(endpoint: str, name: str, *, objects_only: bool = False) -> None:
    """Insert bucket `name` through the JSON API (`POST /storage/v1/b`), as an admin would.

    `objects_only`: the bucket answers 403 to `GET /storage/v1/b/<bucket>`, as it does to a key
    granted object roles on it and not `storage.buckets.get` (the fake's own bucket label).
    """
    labels = {_OBJECTS_ONLY: "true"} if objects_only else {}
    request = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=test",
        data=json.dumps({"name": name, "labels": labels}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


@contextmanager
def fake_gcs_process(*, page_size: int = 3, log: bool = False) -> Iterator[str]:
    """Run the fake in a child process on a free loopback port; yield its endpoint URL.

    Stopped when the block ends (stdin closed, then killed if it lingers); the child also ends
    by itself if its parent dies, as its stdin closes then.
    """
    command = [sys.executable, __file__, "--page-size", str(page_size), *["--log"] * log]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        endpoint = child.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise RuntimeError(f"the fake GCS server did not start (it said {endpoint!r})")
        yield endpoint
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        child.stdout.close()


def main(argv: list[str]) -> None:
    """Serve until stdin closes; the first line of stdout is the endpoint."""
    parser = argparse.ArgumentParser(description="A fake GCS JSON API on 127.0.0.1 (tests).")
    parser.add_argument("--page-size", type=int, default=3)
    parser.add_argument("--log", action="store_true", help="print every call on stderr")
    args = parser.parse_args(argv)
    gcs = FakeGcs(page_size=args.page_size, log=args.log)
    gcs.start()
    try:
        print(gcs.endpoint, flush=True)
        sys.stdin.read()  # until the parent closes the pipe, or dies
    finally:
        gcs.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
