"""The bare stack: the gateway's HTTP server with a trivial app, the limit any gateway here has.

    python -O bench/gateway_bare.py --port PORT

uvicorn as ``skewguard serve`` runs it (the same options, the same HTTP protocol with its
header limits, the same interpreter under ``-O``), serving an ASGI app that reads the
request body, parses it with orjson and answers a small JSON object: what every request
costs before the gateway does anything of its own. The benchmark reports each gateway row
as a ratio to this one.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as `python bench/gateway_bare.py`: bench from the repo root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ANSWER_HEADERS = [(b"content-type", b"application/json")]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Read the body, parse it, answer how many rows it held."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = orjson.loads(b"".join(chunks)) if scope["method"] == "POST" else {}
    rows = len(body.get("rows", [body])) if isinstance(body, dict) else 0
    answer = orjson.dumps({"status": "ok", "rows": rows})
    await send({"type": "http.response.start", "status": 200, "headers": ANSWER_HEADERS})
    await send({"type": "http.response.body", "body": answer})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvicorn

    from skewguard.gateway.server import uvicorn_options
    from skewguard.gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env({"SKEWGUARD_HOST": "127.0.0.1", "SKEWGUARD_PORT": str(args.port)})
    uvicorn.run(app, **uvicorn_options(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
