"""A server that is never the limit: the Explore API's routes answering fixed, real pages.

The benches that measure the client's own cost need a peer that spends next to nothing a
request. `canned_pages()` fetches a few real first pages from the demo server (in this process,
then stopped); `CannedServer` serves them from a child process (its CPU is not the client's),
round robin, whatever the query: `/explore/{id}` answers the next page, the dataset is READY and
its context has every enrichment.

    pages = canned_pages(8)
    with CannedServer(pages) as server:
        ... server.base_url, server.dataset_id, server.pid ...

Run as a script it is the child: `python bench/_canned.py PAGES.json` prints `base_url: ...`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
DATASET_ID = "canned"
_QUERIES = (
    "a dog on the beach",
    "a man riding a horse",
    "pizza on a table",
    "a train at the station",
    "a bus on a city street",
    "people skiing down a snowy mountain",
    "a cat sleeping on a couch",
    "an airplane in the sky",
)


def canned_pages(n: int = 8) -> list[str]:
    """`n` real first pages of full-text searches of the demo dataset (JSON text each)."""
    import urllib.parse
    import urllib.request

    from runner.server.config import ServerConfig
    from runner.server.lifecycle import ServerThread

    pages = []
    with ServerThread(ServerConfig("demo", auth=False)) as server:
        url = f"{server.base_url}/api/v1/explore/{server.dataset_id}"
        for text in itertools.islice(itertools.cycle(_QUERIES), n):
            vql = json.dumps([{"text": {"op": "fts", "value": text}}])
            params = {"entity_type": "IMAGES", "threshold": "0", "vql": vql, "page_number": "0"}
            query = urllib.parse.urlencode(params)
            with urllib.request.urlopen(f"{url}?{query}") as answer:
                pages.append(answer.read().decode())
    return pages


class CannedServer:
    """The canned server in a child process, stopped on exit."""

    def __init__(self, pages: list[str]) -> None:
        self._pages = pages
        self._process: subprocess.Popen[str] | None = None
        self._file: Path | None = None
        self.base_url = ""
        self.dataset_id = DATASET_ID

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> CannedServer:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            json.dump(self._pages, file)
        self._file = Path(file.name)
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__)), str(self._file)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line.startswith("base_url: "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the canned server did not start: {line!r}")
        self.base_url = line.split(": ", 1)[1].strip()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None
        if self._file is not None:
            self._file.unlink(missing_ok=True)


async def _serve(pages: list[bytes]) -> None:
    from aiohttp import web

    turn = itertools.cycle(pages)
    dataset = json.dumps({"id": DATASET_ID, "status_new": "READY", "n_images": 2537}).encode()
    models = {"CAPTION_IMAGES": "m", "MULTIMODEL_IMAGE_ENCODING": "m", "IMAGE_TAGGING": "m"}
    context = json.dumps({"dataset_enrichment_models": {"enrichment_models": models}}).encode()

    def fixed(body: bytes) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def explore(request: web.Request) -> web.Response:
        return fixed(next(turn))

    async def get_dataset(request: web.Request) -> web.Response:
        return fixed(dataset)

    async def get_context(request: web.Request) -> web.Response:
        return fixed(context)

    app = web.Application()
    app.router.add_get("/api/v1/explore/{id}", explore)
    app.router.add_get("/api/v1/dataset/{id}", get_dataset)
    app.router.add_get("/api/v1/enrichment/{id}/context", get_context)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    print(f"base_url: http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    loaded = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    try:
        asyncio.run(_serve([page.encode() for page in loaded]))
    except KeyboardInterrupt:
        pass
