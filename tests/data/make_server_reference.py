"""Write the local server's answers to a fixed set of searches: `tests/test_answers.py` checks them.

The reference was written from the server as it was before its search path was rewritten for
speed (numpy bm25, array grouping, pages built without per-member objects), so that the rewrite
is held to the same answers. It starts the server in this process over the demo dataset, sends
each search of `helpers_answers.QUERIES` over HTTP and stores a summary of page 0 (or the page
the query names): the number of clusters, a digest of the page without its scores, the first
cluster ids and every score.

    PYTHONPATH=. .venv/bin/python tests/data/make_server_reference.py

Regenerate it only when an answer is meant to change, and say why in the commit.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from helpers_answers import QUERIES, summarise  # noqa: E402

from runner.api.auth import DEMO_CREDENTIALS, bearer_header, mint_token  # noqa: E402
from runner.server.config import ServerConfig  # noqa: E402
from runner.server.demo import demo_dataset_dir  # noqa: E402
from runner.server.lifecycle import ServerThread  # noqa: E402

OUT = HERE / "server_reference.json"


async def answers(base_url: str, dataset_id: str) -> dict[str, Any]:
    """Each query's page summary, by name."""
    url = f"{base_url}/api/v1/explore/{dataset_id}"
    headers = bearer_header(mint_token(DEMO_CREDENTIALS, ttl_s=600))
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        for name, params in QUERIES.items():
            async with session.get(url, params={"entity_type": "IMAGES", **params}) as response:
                body = await response.json()
                if response.status != 200:
                    raise SystemExit(f"{name}: {response.status} {body}")
            out[name] = summarise(body["clusters"])
    return out


def main() -> None:
    config = ServerConfig(dataset_dir=demo_dataset_dir(), credentials=DEMO_CREDENTIALS)
    with ServerThread(config) as server:
        result = asyncio.run(answers(server.base_url, server.dataset_id))
    OUT.write_text(json.dumps(result, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes, {len(result)} queries)")


if __name__ == "__main__":
    main()
