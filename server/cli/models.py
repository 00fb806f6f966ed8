"""``quantserve pull | list | ps | rm``, and the models ``serve REF...`` serves."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from backends.errors import QuantserveError
from backends.memplan import gib
from server.runtime.model_refs import HubRef, default_model_id, parse_ref, resolve
from server.settings import DEFAULT_MODELS_DIR, ModelConfig

log = logging.getLogger("quantserve")


def serve_models(refs: list[str]) -> tuple[ModelConfig, ...]:
    """One model per reference, fetched first when it is not cached (progress on stderr)."""
    models = []
    for text in refs:
        ref = parse_ref(text)
        models.append(ModelConfig(id=default_model_id(text, ref), path=resolve(ref)))
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise typer.BadParameter(f"two references give the same model id: {', '.join(ids)}")
    return tuple(models)


def _echo_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _size(n: float) -> str:
    return gib(n) if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


RefsArg = Annotated[list[str], typer.Argument(help="org/repo[:QUANT], hf://org/repo/file.gguf, or a path.")]
RmArg = Annotated[str, typer.Argument(help="org/repo (every file), or org/repo:QUANT / hf://... (those files).")]


def pull(refs: RefsArg) -> None:
    """Download models from the Hugging Face Hub into its cache (HF_HOME); resumes, works offline once cached."""
    failed = False
    for text in refs:
        try:
            path = resolve(parse_ref(text))
        except QuantserveError as exc:
            log.error("%s", exc.message)
            failed = True
            continue
        typer.echo(f"{text}\t{path}")
    if failed:
        raise typer.Exit(1)


def list_models(
    models_dir: Annotated[Path, typer.Option(help="Local models directory also listed.")] = DEFAULT_MODELS_DIR,
) -> None:
    """Cached models: the hub cache and the local models directory, with size, format and quantization."""
    from server.runtime.hub import cached_models

    rows = [[m.ref, m.format, m.quantization, _size(m.size)] for m in cached_models(models_dir.expanduser())]
    _echo_table(rows, ["MODEL", "FORMAT", "QUANT", "SIZE"])


def rm(ref: RmArg) -> None:
    """Delete a downloaded model from the hub cache (local paths are never deleted)."""
    from server.runtime.hub import remove

    parsed = parse_ref(ref)
    if not isinstance(parsed, HubRef):
        log.error("%s is a local path: quantserve rm only deletes hub downloads", ref)
        raise typer.Exit(2)
    try:
        freed = remove(parsed)
    except QuantserveError as exc:
        log.error("%s", exc.message)
        raise typer.Exit(1) from None
    typer.echo(f"deleted {parsed} ({_size(freed)} freed)")


def _ago(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m"


def ps(
    url: Annotated[str, typer.Option(help="The running server.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(help="Its API key (default: $QUANTSERVE_API_KEY).")] = None,
) -> None:
    """Models on a running server: state, memory, requests running / waiting, idle time, unload time."""
    key = api_key or os.environ.get("QUANTSERVE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        resp = httpx.get(f"{url.rstrip('/')}/v1/models", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        log.error("cannot reach %s: %s", url, exc)
        raise typer.Exit(1) from None
    if resp.status_code != 200:
        log.error("%s answered %d: %s", url, resp.status_code, resp.text[:300])
        raise typer.Exit(1)
    rows = []
    for card in resp.json()["data"]:
        st = card.get("status", {})
        memory = st.get("memory_bytes")
        until = st.get("expires_in_s")
        rows.append(
            [
                card["id"],
                st.get("state", "loaded"),
                "-" if memory is None else _size(memory),
                f"{st.get('running', 0)}/{st.get('waiting', 0)}",
                _ago(st.get("idle_s")),
                "forever" if st.get("state") == "loaded" and until is None else _ago(until),
            ]
        )
    _echo_table(rows, ["MODEL", "STATE", "MEMORY", "RUN/WAIT", "IDLE", "UNLOADS IN"])


def register(app: typer.Typer) -> None:
    app.command()(pull)
    app.command("list")(list_models)
    app.command()(ps)
    app.command()(rm)
