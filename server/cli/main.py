"""The ``quantserve`` command."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from backends.errors import ConfigError, QuantserveError
from server.cli.models import register as register_model_commands
from server.cli.models import serve_models
from server.cli.quant import register as register_quant_commands
from server.http.app import create_app
from server.runtime.model_store import DEFAULT_MODEL_ID, ensure_default_model
from server.runtime.pool import ModelPool
from server.settings import ModelConfig, Settings, load_settings

log = logging.getLogger("quantserve")

app = typer.Typer(help="OpenAI-compatible server for quantized LLMs.", no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Manage the local models cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")
register_quant_commands(app)
register_model_commands(app)


def _setup_logging(level: str, *, force: bool = False) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=force)


def _fail(exc: QuantserveError, code: int) -> typer.Exit:
    log.error("%s", exc.message)
    return typer.Exit(code)


@app.command()
def serve(
    refs: Annotated[
        list[str] | None, typer.Argument(help="Models to serve: paths, org/repo[:QUANT] or hf://org/repo/file.gguf.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings file (see configs/).")] = None,
    model: Annotated[str | None, typer.Option(help="Serve this one model (a path or a hub reference).")] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="Require this API key (repeatable).")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    n_gpu_layers: Annotated[
        str | None,
        typer.Option(
            help="Layers to offload to the GPU: auto (default: all that fit; 0 on a CPU build) or a count "
            "(-1 = all). Applies to the models named on the command line, or the default model.",
            parser=_gpu_layers,
        ),
    ] = None,
) -> None:
    """Start the server (with no model configured: the embedded SmolLM2-135M-Instruct Q4_1)."""
    _setup_logging(log_level or "info")
    explicit: dict[str, object] = {"host": host, "port": port, "log_level": log_level}
    if api_key:
        explicit["api_keys"] = tuple(api_key)
    offload: dict[str, Any] = {} if n_gpu_layers is None else {"n_gpu_layers": n_gpu_layers}
    try:
        if model is not None or refs:
            named = serve_models([*([model] if model else []), *(refs or [])])
            explicit["models"] = tuple(m.model_copy(update={"options": {**m.options, **offload}}) for m in named)
        settings = load_settings(config, **explicit)
        if offload and model is None and not refs:
            settings = _default_model_with(settings, offload)
        logging.getLogger().setLevel(settings.log_level.upper())
        pool = ModelPool.from_settings(settings)
    except QuantserveError as exc:
        raise _fail(exc, 2) from None
    try:
        asyncio.run(_serve(settings, pool))
    except ConfigError as exc:  # found at load time (e.g. offload asked of a CPU build): still a config error
        raise _fail(exc, 2) from None
    except QuantserveError as exc:
        raise _fail(exc, 1) from None


def _gpu_layers(value: str) -> str | int:
    """``auto`` or an integer >= -1 (typer hands ``n_gpu_layers`` through as the option's value)."""
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = -2
    if count < -1:
        raise typer.BadParameter(f"{value!r} is neither auto nor a layer count (-1 = all)")
    return count


def _default_model_with(settings: Settings, options: dict[str, Any]) -> Settings:
    """``--n-gpu-layers`` without ``--model``: the default model, unless a config lists models
    (each then says its own n_gpu_layers, as a flag cannot say which one it means)."""
    if settings.models:
        raise ConfigError(
            "--n-gpu-layers applies to --model or the default model; set options.n_gpu_layers per model in the config"
        )
    default = ModelConfig(id=DEFAULT_MODEL_ID, path=ensure_default_model(settings.models_dir), options=options)
    return settings.model_copy(update={"models": (default,)})


async def _serve(settings: Settings, pool: ModelPool) -> None:
    # Models load before the socket opens, in the loop uvicorn then serves on, so a model
    # that cannot load is a one-line start-up error, not a traceback from the lifespan.
    await pool.start_all()
    # vLLM re-configures logging when it starts an engine; put ours back.
    _setup_logging(settings.log_level, force=True)
    config = uvicorn.Config(
        create_app(settings, pool),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # A little beyond the streams' grace, so uvicorn never kills a stream still inside it.
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )
    # uvicorn drains on SIGTERM, then re-raises the signal under the handler that was there
    # before it: make that a no-op so a completed graceful shutdown exits 0, not -15.
    signal.signal(signal.SIGTERM, lambda *_: None)
    await uvicorn.Server(config).serve()


@models_app.command("prepare")
def prepare(
    models_dir: Annotated[
        Path | None, typer.Option(help="Cache directory (default ~/.cache/quantserve/models).")
    ] = None,
    vllm: Annotated[
        bool, typer.Option("--vllm", help="Also build the vLLM checkpoints: bf16, INT8 W8A8, W4A16 GPTQ and AWQ.")
    ] = False,
) -> None:
    """Fetch the default model into the cache; with --vllm also build the vLLM checkpoints.

    Every step is skipped when its output is already cached."""
    _setup_logging("info")
    settings = load_settings(models_dir=models_dir)
    try:
        path = ensure_default_model(settings.models_dir)
    except QuantserveError as exc:
        raise _fail(exc, 1) from None
    log.info("%s: %s", DEFAULT_MODEL_ID, path)
    if vllm:
        from toolkit.hf_prepare import PrepareError, prepare_all

        try:
            for name, fixture in prepare_all(settings.models_dir).items():
                log.info("%s: %s", name, fixture)
        except PrepareError as exc:
            log.error("%s", exc)
            raise typer.Exit(1) from None


def main() -> None:
    app()
