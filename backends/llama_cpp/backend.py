"""GGUF models on llama.cpp (llama-cpp-python)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar

from backends import memplan
from backends.base import Backend, BackendOptions
from backends.call_formats import FORMATS, CallFormat, call_format, in_format
from backends.chat_template import ChatTemplate
from backends.checks import check_prompt_fits, check_token_ids
from backends.embeddings import (
    EmbeddingRequest,
    EmbeddingResult,
    TokenizeRequest,
    TokenizeResult,
    check_dimensions,
    check_input_lengths,
    cut_after_final_message,
    input_tokens,
)
from backends.errors import (
    BackendStartupError,
    BackendUnavailable,
    ConfigError,
    InvalidRequest,
    UnsupportedParameter,
)
from backends.formats import gguf_file_type_name
from backends.llama_cpp import offload
from backends.llama_cpp.engine_api import LlamaEngine, Vocab
from backends.llama_cpp.options import LlamaCppOptions
from backends.reasoning import split_chunk
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

if TYPE_CHECKING:  # both import llama_cpp, which this module must not import before start()
    from backends.llama_cpp.batched import BatchedEngine
    from backends.llama_cpp.embedding import Embedder
    from backends.llama_cpp.process_engine import ProcessEngine
    from backends.types import Message

log = logging.getLogger(__name__)

_GGML_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}


class LlamaCppBackend(Backend):
    name: ClassVar[str] = "llama_cpp"
    Options: ClassVar[type[BackendOptions]] = LlamaCppOptions

    def __init__(self, spec: ModelSpec, options: BackendOptions) -> None:
        super().__init__(spec, options)
        assert isinstance(options, LlamaCppOptions)
        self._opts = options
        self._engine: LlamaEngine | None = None
        self._template: ChatTemplate | None = None
        self._device = "cpu"
        self._n_gpu_layers = 0  # resolved from the option (``auto`` or a count) at each start
        self._embedder: Embedder | None = None  # built on the first /v1/embeddings request

    @classmethod
    def supports(cls, spec: ModelSpec, device: Device) -> Support:
        if spec.format is not ModelFormat.GGUF:
            return Support.no(f"serves GGUF files only, not {spec.format.value}")
        if importlib.util.find_spec("llama_cpp") is None:
            return Support.no("not installed (pip install llama-cpp-python==0.3.36)")
        return Support.yes()

    async def start(self) -> None:
        if self._engine is not None:
            return
        n_gpu_layers = await self._offload()
        try:
            self._engine = await asyncio.to_thread(self._open_engine, n_gpu_layers)
        except BackendStartupError as exc:
            raise BackendStartupError(f"model {self.spec.id!r}: {exc.message}") from exc
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendStartupError(
                f"model {self.spec.id!r}: llama.cpp could not load {self.spec.path.name}: {exc}"
            ) from exc
        source = self._opts.chat_template or self._engine.metadata.get("tokenizer.chat_template")
        if source:
            try:
                self._template = ChatTemplate(source, bos_token=self._engine.bos_text, eos_token=self._engine.eos_text)
            except BackendStartupError as exc:
                await self.stop()
                raise BackendStartupError(f"model {self.spec.id!r}: {exc.message}") from None
        else:
            log.warning("model %s has no chat template: /v1/chat/completions will refuse it", self.spec.id)
        log.info("model %s loaded: %s, context %d", self.spec.id, self.spec.path.name, self._engine.n_ctx)

    async def _offload(self) -> int:
        """Resolve ``n_gpu_layers`` and check that the plan fits host and device memory; ONE log line
        says what was chosen and why. A GGUF whose header cannot be read is left to llama.cpp,
        which reports it better."""
        opts = self._opts
        devices = await asyncio.to_thread(offload.query_devices)
        # In a thread: reading the GGUF header can take seconds on a busy machine, and the event
        # loop keeps serving the other models' streams meanwhile.
        layout = await asyncio.to_thread(self._layout)
        choice = offload.resolve(opts.n_gpu_layers, devices, layout, self.spec.id)
        self._device = devices.label if choice.n_gpu_layers else "cpu"
        where = f" on {devices.names}" if choice.n_gpu_layers else ""
        log.info(
            "model %s: n_gpu_layers %s -> %d%s: %s",
            self.spec.id,
            opts.n_gpu_layers,
            choice.n_gpu_layers,
            where,
            choice.reason,
        )
        if layout is not None:
            memplan.guard_llama_cpp(
                self.spec.id,
                layout,
                n_gpu_layers=choice.n_gpu_layers,
                device_free=devices.free_bytes,
                device_place=devices.place,
            )
        self._n_gpu_layers = choice.n_gpu_layers
        return choice.n_gpu_layers

    def _layout(self) -> memplan.LlamaLayout | None:
        """Where this model's weights and KV cache go; None when the GGUF header cannot be read."""
        opts = self._opts
        try:
            return memplan.llama_layout(
                self.spec.path,
                n_ctx=opts.n_ctx,
                parallel=opts.parallel,
                cache_type_k=opts.cache_type_k,
                cache_type_v=opts.cache_type_v,
            )
        except ConfigError:
            return None

    def memory_plan(self) -> memplan.MemoryPlan | None:
        # Host memory, for the server's load budget. Before the first load, ``auto`` is counted as
        # no offload: the budget errs on the side of refusing rather than over-committing.
        layout = self._layout()
        return None if layout is None else layout.host_plan(self._n_gpu_layers)

    def _open_engine(self, n_gpu_layers: int) -> LlamaEngine:
        opts = self._opts
        # llama-cpp-python prints every llama.cpp log line to stderr unless its logger says
        # otherwise; keep load chatter out of the server log unless we are debugging.
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        engine_options: dict[str, Any] = {
            "n_ctx": opts.n_ctx,
            "parallel": opts.parallel,
            "n_batch": opts.n_batch,
            "n_threads": opts.n_threads,
            "n_gpu_layers": n_gpu_layers,
            "flash_attn": opts.flash_attn,
            "cache_type_k": opts.cache_type_k,
            "cache_type_v": opts.cache_type_v,
            "max_queue": opts.max_queue,
            "prefix_cache": opts.prefix_cache,
            "sampler": opts.sampler,
        }
        if opts.engine_process:
            from backends.llama_cpp.process_engine import ProcessEngine

            return ProcessEngine(
                self.spec.path, engine_options, embedding_pooling=opts.embedding_pooling, label=self.spec.id
            )
        from backends.llama_cpp.batched import BatchedEngine

        return BatchedEngine(self.spec.path, **engine_options)

    async def stop(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)

    async def check_health(self) -> None:
        engine = self._engine
        if engine is None:
            raise BackendUnavailable(f"model {self.spec.id!r} is not loaded")
        if not engine.alive:
            reason = engine.failure or "its thread exited"
            raise BackendUnavailable(f"model {self.spec.id!r}: the llama.cpp engine stopped ({reason})")

    def _require_engine(self) -> LlamaEngine:
        if self._engine is None:
            raise BackendUnavailable(f"model {self.spec.id!r} is not loaded")
        return self._engine

    def info(self) -> BackendInfo:
        engine = self._engine
        file_type = engine.metadata.get("general.file_type", "") if engine else ""
        return BackendInfo(
            backend=self.name,
            model_id=self.spec.id,
            device=self._device,
            format=self.spec.format.value,
            quantization=gguf_file_type_name(file_type),
            kv_cache_dtype=f"k:{self._opts.cache_type_k},v:{self._opts.cache_type_v}",
            context_length=engine.n_ctx if engine else self._opts.n_ctx,
        )

    def stats(self) -> EngineStats:
        return self._engine.stats() if self._engine else EngineStats()

    def call_format(self) -> CallFormat:
        template = self._template
        if template is None or not template.native_tools:
            return FORMATS["hermes"]  # our preamble teaches the Hermes form
        return call_format(template.format.tool_format)

    def _chat_template(self) -> ChatTemplate:
        if self._template is None:
            raise InvalidRequest(
                f"model {self.spec.id!r} has no chat template; use /v1/completions or set options.chat_template",
                param="messages",
            )
        return self._template

    def tokenize_request(self, req: GenerationRequest) -> list[int]:
        engine = self._require_engine()
        if req.messages is not None:
            # The rendered template already holds any BOS it wants; parse its special tokens.
            return engine.tokenize(self._chat_template().render_request(req), add_special=False)
        assert req.prompt is not None
        if isinstance(req.prompt, tuple):
            check_token_ids(req.prompt, engine.n_vocab, "prompt")
            if req.suffix is not None:
                raise UnsupportedParameter("'suffix' needs a text prompt, not token ids", param="suffix")
            return list(req.prompt)
        if req.suffix is None:
            return engine.tokenize(req.prompt, add_special=True)
        fim = engine.fim_tokens
        if fim is None:
            raise UnsupportedParameter(
                f"model {self.spec.id!r} has no fill-in-the-middle tokens, so 'suffix' cannot be honoured",
                param="suffix",
            )
        # The model's own FIM layout (prefix, suffix, then the middle it is to write), as llama-server builds it.
        prefix = engine.tokenize(req.prompt, add_special=True)
        bos = prefix[:1] if prefix and engine.tokenize("", add_special=True) == prefix[:1] else []
        body = prefix[len(bos) :]
        return [*bos, fim[0], *body, fim[1], *engine.tokenize(req.suffix, add_special=False), fim[2]]

    async def generate(self, req: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        engine = self._require_engine()
        splitter = None
        if req.messages is not None:
            template = self._chat_template()
            prompt = template.render_request(req)
            tokens = engine.tokenize(prompt, add_special=False)
            splitter = template.reasoning_splitter(req, prompt)
        else:
            tokens = self.tokenize_request(req)
        check_prompt_fits(
            len(tokens),
            n_ctx=engine.n_ctx,
            max_tokens=req.sampling.max_tokens,
            max_prompt_tokens=req.max_prompt_tokens,
            param="messages" if req.messages is not None else "prompt",
        )
        constraint = in_format(req.constraint, self.call_format())
        stream = engine.generate(req.request_id, tokens, req.sampling, constraint, queue_timeout_s=req.queue_timeout_s)
        async for chunk in stream:
            yield split_chunk(splitter, chunk)

    # ---- embeddings, /tokenize and /detokenize (optional Backend capabilities) ----
    def _vocabulary(self) -> Vocab:
        """Where tokens become text and back: the engine process's vocab-only copy, or the
        in-process engine's own model."""
        from backends.llama_cpp.batched import BatchedEngine
        from backends.llama_cpp.process_engine import ProcessEngine

        engine = self._require_engine()
        if isinstance(engine, ProcessEngine):
            return engine.vocabulary
        if isinstance(engine, BatchedEngine):
            return engine.native
        raise self._cannot("reach its vocabulary")

    def _embedder_for(self, engine: BatchedEngine) -> Embedder:
        from backends.llama_cpp.batched import _usable_cpus
        from backends.llama_cpp.embedding import EmbedConfig, Embedder, resolve_pooling

        native = engine.native
        # A restarted engine has a new native model; the old embedder was closed with the old one.
        if self._embedder is None or self._embedder.native is not native:
            pooling = resolve_pooling(self._opts.embedding_pooling, engine.metadata)
            threads = self._opts.n_threads or _usable_cpus()
            self._embedder = Embedder(native, EmbedConfig(engine.n_ctx, threads, self._opts.flash_attn, pooling))
        return self._embedder

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResult:
        from backends.llama_cpp.batched import BatchedEngine
        from backends.llama_cpp.process_engine import ProcessEngine

        engine = self._require_engine()
        vocab = self._vocabulary()
        embedder: Embedder | ProcessEngine
        if isinstance(engine, ProcessEngine):
            embedder, size = engine, engine.embedding_size
        else:
            assert isinstance(engine, BatchedEngine)
            embedder = self._embedder_for(engine)
            size = embedder.size
        check_dimensions(req.dimensions, size)

        def tokenize(text: str) -> list[int]:
            return vocab.tokenize(text, add_special=True)  # BOS/EOS as the model's GGUF asks

        # Off the event loop: a batch of long texts takes a while to tokenize (thread-safe).
        tokens = await asyncio.to_thread(input_tokens, req.inputs, tokenize, n_vocab=vocab.n_vocab)
        check_input_lengths(tokens, n_ctx=engine.n_ctx, cap=req.max_input_tokens)
        vectors = await embedder.embed(tokens)
        return EmbeddingResult(tuple(vectors), sum(len(t) for t in tokens))

    async def tokenize(self, req: TokenizeRequest) -> TokenizeResult:
        native = self._vocabulary()
        text = req.prompt if req.messages is None else self._render_for_tokenize(req, req.messages)
        assert text is not None
        tokens = await asyncio.to_thread(native.tokenize, text, add_special=req.add_special_tokens)
        strs = tuple(native.token_text(t) for t in tokens) if req.return_token_strs else None
        return TokenizeResult(tuple(tokens), strs)

    def _render_for_tokenize(self, req: TokenizeRequest, messages: tuple[Message, ...]) -> str:
        if self._template is None:
            raise InvalidRequest(f"model {self.spec.id!r} has no chat template; send a prompt", param="messages")
        kwargs = req.template_kwargs
        if not req.continue_final_message:
            return self._template.render(
                messages, tools=req.tools, add_generation_prompt=req.add_generation_prompt, kwargs=kwargs
            )
        rendered = self._template.render(messages, tools=req.tools, add_generation_prompt=False, kwargs=kwargs)
        return cut_after_final_message(rendered, messages[-1].content)

    async def detokenize(self, tokens: list[int]) -> str:
        native = self._vocabulary()
        check_token_ids(tokens, native.n_vocab)
        return await asyncio.to_thread(native.detokenize, tokens)
