"""Do the agent APIs cost anything? A streamed answer through /v1/messages (Anthropic) and
/v1/responses (OpenAI Responses) against /v1/chat/completions, on one quantserve process.

    .venv/bin/python -m bench.agent_apis [--runs 3] [--tokens 128] [--threads 2]

The same greedy prompt goes through each API; runs rotate (chat, messages, responses, chat, ...)
so background load hits all three alike. Decode tokens/s is counted from the first streamed text to
the last, with the token count from each API's own usage. The table shows medians and the ratio to
chat completions (target: within 3%, i.e. >= 0.97).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.common import QuantserveProcess, StreamTiming, median
from server.runtime.model_store import ensure_default_model
from server.settings import DEFAULT_MODELS_DIR

log = logging.getLogger("bench")
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."

# Per API: (path, request body, event -> (text, completion tokens or None)).
Reader = Callable[[dict[str, Any]], tuple[str, int | None]]


def _chat(event: dict[str, Any]) -> tuple[str, int | None]:
    text = event["choices"][0]["delta"].get("content") or "" if event.get("choices") else ""
    usage = event.get("usage")
    return text, usage["completion_tokens"] if usage else None


def _messages(event: dict[str, Any]) -> tuple[str, int | None]:
    if event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
        return event["delta"]["text"], None
    if event["type"] == "message_delta":
        return "", event["usage"]["output_tokens"]
    return "", None


def _responses(event: dict[str, Any]) -> tuple[str, int | None]:
    if event["type"] == "response.output_text.delta":
        return event["delta"], None
    if event["type"] in ("response.completed", "response.incomplete"):
        return "", event["response"]["usage"]["output_tokens"]
    return "", None


def apis(tokens: int) -> dict[str, tuple[str, dict[str, Any], Reader]]:
    turn = [{"role": "user", "content": PROMPT}]
    return {
        "/v1/chat/completions": (
            "/v1/chat/completions",
            {"messages": turn, "max_tokens": tokens, "stream_options": {"include_usage": True}},
            _chat,
        ),
        "/v1/messages": ("/v1/messages", {"messages": turn, "max_tokens": tokens}, _messages),
        "/v1/responses": ("/v1/responses", {"input": PROMPT, "max_output_tokens": tokens, "store": False}, _responses),
    }


def stream_once(client: httpx.Client, url: str, path: str, body: dict[str, Any], read: Reader) -> StreamTiming:
    start = time.perf_counter()
    first = last = 0.0
    count = 0
    payload = {"model": "bench", "temperature": 0, "stream": True, **body}
    with client.stream("POST", f"{url}{path}", json=payload, timeout=600) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            text, tokens = read(json.loads(line[6:]))
            if text:
                now = time.perf_counter()
                first = first or now
                last = now
            if tokens is not None:
                count = tokens
    return StreamTiming(first - start, last - first, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    model = ensure_default_model(DEFAULT_MODELS_DIR)
    opts = {"n_ctx": 2048, "n_threads": args.threads}
    config = f"models:\n  - id: bench\n    path: {model}\n    backend: llama_cpp\n    options: {opts}\n"
    table = apis(args.tokens)
    timings: dict[str, list[StreamTiming]] = {name: [] for name in table}
    with tempfile.TemporaryDirectory() as tmp, httpx.Client() as client:
        server = QuantserveProcess(config, Path(tmp))
        try:
            for path, body, read in table.values():  # warm-up: each route once, a few tokens
                short = {k: (8 if k in ("max_tokens", "max_output_tokens") else v) for k, v in body.items()}
                stream_once(client, server.url, path, short, read)
            for i in range(args.runs):
                for name, (path, body, read) in table.items():
                    timings[name].append(stream_once(client, server.url, path, body, read))
                log.info(
                    "run %d: %s", i + 1, ", ".join(f"{n} {t[-1].decode_tps:.1f} tok/s" for n, t in timings.items())
                )
        finally:
            server.close()
    base = median([t.decode_tps for t in timings["/v1/chat/completions"]])
    lines = [
        f"model {model.name}, {args.threads} threads, {args.tokens} tokens max, greedy, median of {args.runs} runs",
        "| API | decode tok/s | TTFT ms | tokens | ratio to chat completions |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, runs in timings.items():
        tps = median([t.decode_tps for t in runs])
        ttft = median([t.ttft for t in runs]) * 1000
        lines.append(f"| {name} | {tps:.1f} | {ttft:.0f} | {runs[0].tokens} | {tps / base if base else 0.0:.3f} |")
    log.info("\n%s", "\n".join(lines))


if __name__ == "__main__":
    main()
