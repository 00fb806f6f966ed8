"""``GET /metrics``: the app's registry in the classic Prometheus text format (0.0.4).

Behind the API key like every route when keys are set; list it in ``open_paths`` to let a scraper
without a key in.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from server.runtime.metrics import Metrics, get_metrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(m: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
