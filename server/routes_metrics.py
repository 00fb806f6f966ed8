"""``GET /metrics``: the app's registry in the classic Prometheus text format (0.0.4).

Public by default (scrapers rarely carry a key); with ``metrics_public: false`` it takes the same
API key as ``/v1``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from server.auth import require_api_key
from server.metrics import Metrics, get_metrics

router = APIRouter()


def _metrics_auth(request: Request) -> None:
    if not request.app.state.settings.metrics_public:
        require_api_key(request)


@router.get("/metrics", dependencies=[Depends(_metrics_auth)], include_in_schema=False)
async def metrics(m: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
