"""The JSON of an event stream's data lines, the same for every API that streams."""

from __future__ import annotations

import json
from typing import Any

# JSON may carry these unescaped, and an event stream ends a line only at CR or LF; but Python's
# str.splitlines, and so httpx's aiter_lines and the clients built on it, also ends one at each
# of them, cutting an event in two. Escaped, they read back as the same string.
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_ESCAPE = str.maketrans(_LINE_BREAKS)


def event_json(body: Any) -> str:
    text = json.dumps(body, ensure_ascii=False)
    if any(c in text for c in _LINE_BREAKS):
        text = text.translate(_ESCAPE)
    return text
