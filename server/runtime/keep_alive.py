"""``keep_alive``: how long a model stays loaded after its last request, with Ollama's semantics.

A duration string (``"5m"``, ``"1h30m"``, ``"90s"``, ``"500ms"``) or a number of seconds; ``0``
unloads the model as soon as its requests finish; any negative value keeps it loaded for good.
Parsed into seconds, ``math.inf`` meaning forever.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

FOREVER = math.inf
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: object) -> float:
    """Seconds (``math.inf``: forever). Raises ``ValueError`` naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration such as '5m' or a number of seconds, not a boolean")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration(value.strip())
    else:
        raise ValueError("keep_alive must be a duration such as '5m' or a number of seconds")
    if math.isnan(seconds):
        raise ValueError("keep_alive must be a number")
    return FOREVER if seconds < 0 else seconds


def _duration(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m[1]) * _UNIT_S[m[2]]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"keep_alive {text!r} is not a duration: use e.g. '10m', '1h30m', '45s', 0 or -1")
    return sign * total


def render_keep_alive(seconds: float) -> float:
    """As JSON has no infinity: -1 for forever (what a user would write to ask for it)."""
    return -1.0 if math.isinf(seconds) else seconds


# A settings / request field: accepts what parse_keep_alive does, holds seconds, writes -1 for forever.
KeepAlive = Annotated[float, BeforeValidator(parse_keep_alive), PlainSerializer(render_keep_alive)]
