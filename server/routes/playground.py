"""The playground at ``/``: a static chat page that talks to this server's own API (setting
``playground``; when API keys are set, the page itself is open and asks for the key)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)

_ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
# Served without an API key: the page holds no data, and asks for the key itself.
PLAYGROUND_PATHS = ("/", *(f"/playground/{name}" for name in _ASSETS))


def _read(name: str) -> bytes:
    return files("server.playground").joinpath(name).read_bytes()


@router.get("/")
async def page() -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})


@router.get("/playground/{name}")
async def asset(name: str) -> Response:
    if name not in _ASSETS:
        return Response(status_code=404)
    return Response(_read(name), media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"})
