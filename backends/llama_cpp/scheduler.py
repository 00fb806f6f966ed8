"""The engine thread: continuous batching over the sequences of one llama.cpp context.

Each step admits waiting requests into free slots, builds ONE batch (a decode token for every
running sequence, then prompt chunks of newly admitted ones within ``n_batch``), calls
``llama_decode`` once, then samples every sequence that has logits: the plain ones together
(``batch_sampling``, or llama.cpp's backend sampler inside the decode), the rest with their own
native chain (see ``sampling`` for the routes). Everything here runs on the engine thread only,
so slot state needs no locks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from backends.errors import BackendUnavailable
from backends.llama_cpp import sampling as smp
from backends.llama_cpp.admission import RequestGate
from backends.llama_cpp.batch_sampling import BatchSampler, Draw
from backends.llama_cpp.native import NativeModel
from backends.llama_cpp.slots import Active, Item, RequestHandle, Sink, Slot, pick_slot
from backends.textstream import TextStream
from backends.types import FinishReason, GenerationChunk, TokenLogprob, Usage

logger = logging.getLogger(__name__)

Outbox = dict[Sink, list[tuple[RequestHandle, Item]]]


class Scheduler:
    def __init__(
        self,
        native: NativeModel,
        gate: RequestGate,
        *,
        parallel: int,
        n_batch: int,
        prefix_cache: bool,
        min_tail: int,
        route: smp.SamplerRoute,
    ) -> None:
        self._native = native
        self._route = route
        self._batch_sampler = BatchSampler(parallel, native.n_vocab)
        self._gate = gate
        self._n_batch = n_batch
        self._prefix_cache = prefix_cache
        self._min_tail = min_tail  # prompt tokens always recomputed on a prefix hit (see BatchedEngine)
        self._slots = [Slot(i) for i in range(parallel)]
        self._waiting: deque[RequestHandle] = deque()
        self._admissions = 0
        # Read from other threads without a lock: single int stores are atomic under the GIL.
        self.running = 0
        self.kv_used = 0
        self.generated = 0
        self.failure: str | None = None  # why the thread died, if it crashed (read by health checks)

    def run(self) -> None:
        """Thread target: step until the gate closes, then fail whatever is left."""
        try:
            while not self._gate.closed:
                busy = self._step()
                # Whatever still waits after admission has no slot: fail those past their queue timeout.
                for req, error in self._gate.expire(self._waiting):
                    _send({req.sink: [(req, error)]})
                if not busy:
                    self._gate.wake.wait()
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"[:300]
            logger.exception("llama.cpp engine thread crashed; failing all requests")
        finally:
            self._gate.close()
            self._shutdown()

    def _step(self) -> bool:
        """One scheduling step; False when there was nothing to compute."""
        self._gate.wake.clear()  # cleared before looking, so a request arriving now wakes the next wait
        self._waiting.extend(self._gate.take_new())
        self._reap_cancelled()
        self._admit()
        active = [s for s in self._slots if s.active is not None]
        self.running = len(active)
        if not active:
            self.kv_used = 0
            return False
        outbox: Outbox = {}
        n_tokens = self._fill_batch(active)
        rc = self._native.decode(n_tokens)
        if rc != 0:
            logger.error("llama_decode returned %d for a batch of %d tokens", rc, n_tokens)
            for slot in active:
                self._fail(slot, RuntimeError(f"llama_decode failed ({rc})"), outbox)
        else:
            self._sample(active, outbox)
        self.kv_used = sum(len(s.kv) for s in self._slots if s.active is not None)
        self.running = sum(1 for s in self._slots if s.active is not None)
        _send(outbox)
        return True

    def _sample(self, active: list[Slot], outbox: Outbox) -> None:
        """A token for every sequence that got logits this step: numpy-routed ones all at once."""
        outputs = sorted(s.active.batch_index for s in active if s.active is not None and s.active.batch_index >= 0)
        row_of = {index: row for row, index in enumerate(outputs)}  # logits rows follow batch order
        together: list[tuple[Slot, Active]] = []
        for slot in active:
            a = slot.active
            if a is None or a.batch_index < 0:
                continue
            if a.draw is not None:
                together.append((slot, a))
            else:  # native chain; on the backend route it returns the token the decode sampled
                self._on_token(slot, a, smp.sample(a.sampler, self._native.ctx, a.batch_index), outbox)
        if together:
            logits = self._native.output_logits(len(outputs))
            rows = [row_of[a.batch_index] for _, a in together]
            draws = [a.draw for _, a in together if a.draw is not None]
            tokens = self._batch_sampler.sample(logits, rows, draws)
            for (slot, a), token in zip(together, tokens, strict=True):
                self._on_token(slot, a, token, outbox)

    def _reap_cancelled(self) -> None:
        for slot in self._slots:
            if slot.active is not None and slot.active.req.cancelled:
                logger.debug("request %s cancelled in slot %d", slot.active.req.request_id, slot.seq_id)
                self._release(slot, keep_kv=False)
        if any(r.cancelled for r in self._waiting):
            self._waiting = deque(r for r in self._waiting if not r.cancelled)

    def _admit(self) -> None:
        while self._waiting:
            idle = [s for s in self._slots if s.active is None]
            if not idle:
                return
            req = self._waiting.popleft()
            slot, shared = pick_slot(idle, req.prompt)
            # At least the last prompt token is always decoded: its logits give the first token.
            reuse = max(0, min(shared, len(req.prompt) - self._min_tail))
            if reuse < len(slot.kv) and not self._native.seq_rm(slot.seq_id, reuse):
                self._native.seq_rm(slot.seq_id, -1)  # partial removal refused: start clean
                reuse = 0
            del slot.kv[reuse:]
            chain, draw, on_backend = self._sampler_for(req, slot.seq_id)
            self._admissions += 1
            now = time.monotonic()
            slot.active = Active(
                req, chain, draw, on_backend, TextStream(req.sampling.stop), reuse, reuse, self._admissions, now
            )
            slot.active.queue_s = now - req.submitted
            logger.debug(
                "request %s -> slot %d (%d prompt tokens, %d reused)",
                req.request_id,
                slot.seq_id,
                len(req.prompt),
                reuse,
            )

    def _sampler_for(self, req: RequestHandle, seq_id: int) -> tuple[Any, Draw | None, bool]:
        """(native chain or None, numpy draw or None, chain attached to the decode) for a request."""
        p = req.sampling
        seed = smp.request_seed(p)
        native = self._route == "native" or smp.needs_native(p, req.grammar)
        # A grammar decides where constrained output ends: banning its end would leave it nothing.
        ban = self._native.eog_tokens() if p.ignore_eos and req.grammar is None else None
        # logprobs report the raw distribution, which backend sampling does not copy back. Greedy
        # stays an argmax over the logits view: cheaper than one argmax node per sequence in the graph.
        on_backend = self._route == "backend" and p.logprobs is None and p.temperature > 0.0
        if native or on_backend:
            chain = smp.build_chain(
                p,
                vocab=self._native.vocab,
                n_vocab=self._native.n_vocab,
                seed=seed,
                grammar=req.grammar,
                ban=() if ban is None else ban.tolist(),
            )
            if native:
                smp.prime_penalties(chain, p, req.prompt)
                return chain, None, False
            if self._native.set_sampler(seq_id, chain):
                return chain, None, True
            smp.free_chain(chain)  # a stage the backend cannot run: sample it in numpy instead
        return None, Draw.of(p, seed, ban), False

    def _fill_batch(self, active: list[Slot]) -> int:
        """Decode tokens of running sequences first, then prompt chunks in admission order."""
        put = self._native.put
        n = 0
        prefilling: list[tuple[Slot, Active]] = []
        for slot in active:
            a = slot.active
            assert a is not None
            a.batch_index = -1
            if a.next_token >= 0:
                put(n, a.next_token, len(slot.kv), slot.seq_id, True)
                slot.kv.append(a.next_token)
                a.batch_index = n
                n += 1
            else:
                prefilling.append((slot, a))
        prefilling.sort(key=lambda sa: sa[1].admitted)
        for slot, a in prefilling:
            budget = self._n_batch - n
            if budget <= 0:
                break
            prompt = a.req.prompt
            chunk = prompt[a.n_fed : a.n_fed + budget]
            base = len(slot.kv)
            for j, token in enumerate(chunk):
                put(n + j, token, base + j, slot.seq_id, False)
            slot.kv.extend(chunk)
            a.n_fed += len(chunk)
            n += len(chunk)
            if a.n_fed == len(prompt):
                self._native.logits[n - 1] = True
                a.batch_index = n - 1
        return n

    def _on_token(self, slot: Slot, a: Active, token: int, outbox: Outbox) -> None:
        data, eog = self._native.piece(token)
        if eog:  # not a completion token; its text (if any) is never shown
            self._finish(slot, a, a.text.flush(), 0, "stop", outbox)
            return
        a.n_generated += 1
        self.generated += 1
        k = a.req.sampling.logprobs
        if k is not None:
            a.logprobs.append(
                smp.token_logprobs(self._native.ctx, a.batch_index, token, k, self._native.n_vocab, self._bytes)
            )
        text = a.text.feed(data)
        if a.text.stopped:
            self._finish(slot, a, text, 1, "stop", outbox)
        elif a.n_generated >= a.req.limit:
            self._finish(slot, a, text + a.text.flush(), 1, "length", outbox)
        else:
            a.next_token = token
            chunk = GenerationChunk(text, 1, queue_s=a.queue_s, logprobs=self._take_logprobs(a, text))
            outbox.setdefault(a.req.sink, []).append((a.req, chunk))
            a.queue_s = None

    def _bytes(self, token: int) -> bytes:
        return self._native.piece(token)[0]

    @staticmethod
    def _take_logprobs(a: Active, text: str) -> tuple[TokenLogprob, ...]:
        # Entries travel with the text they explain; while text is held back, so are they.
        if not a.logprobs or not text:
            return ()
        out = tuple(a.logprobs)
        a.logprobs.clear()
        return out

    def _finish(self, slot: Slot, a: Active, text: str, tokens: int, reason: FinishReason, outbox: Outbox) -> None:
        usage = Usage(len(a.req.prompt), a.n_generated, a.n_cached)
        logprobs = tuple(a.logprobs)
        a.logprobs.clear()
        chunk = GenerationChunk(
            text, tokens, reason, usage, queue_s=a.queue_s, logprobs=logprobs, stop_sequence=a.text.matched
        )
        outbox.setdefault(a.req.sink, []).append((a.req, chunk))
        logger.debug("request %s finished (%s, %d tokens)", a.req.request_id, reason, a.n_generated)
        self._release(slot, keep_kv=self._prefix_cache)

    def _fail(self, slot: Slot, exc: BaseException, outbox: Outbox) -> None:
        a = slot.active
        if a is not None:
            outbox.setdefault(a.req.sink, []).append((a.req, exc))
            self._release(slot, keep_kv=False)

    def _release(self, slot: Slot, *, keep_kv: bool) -> None:
        """Free the slot for the next waiter; drop its KV cells unless kept for prefix reuse."""
        a = slot.active
        assert a is not None
        if a.on_backend:
            self._native.set_sampler(slot.seq_id, None)  # detach before the chain is freed
        if a.sampler is not None:
            smp.free_chain(a.sampler)
        slot.active = None
        slot.last_used = self._admissions
        if not keep_kv:
            self._native.seq_rm(slot.seq_id, -1)
            slot.kv.clear()
        self._gate.note_service_time(time.monotonic() - a.started)
        self._gate.release(a.req)

    def _shutdown(self) -> None:
        """Engine thread exit: fail whatever is still outstanding and free the samplers."""
        self._waiting.extend(self._gate.take_new())
        outbox: Outbox = {}
        error = BackendUnavailable("the llama.cpp engine failed" if self.failure else "the llama.cpp engine stopped")
        for slot in self._slots:
            self._fail(slot, error, outbox)
        for req in self._waiting:
            outbox.setdefault(req.sink, []).append((req, error))
            self._gate.release(req)
        self._waiting.clear()
        self.running = 0
        self.kv_used = 0
        _send(outbox)


def _send(outbox: Outbox) -> None:
    """One hand-off per sink per step, not one per token."""
    for sink, items in outbox.items():
        try:
            sink.send(items)
        except RuntimeError:  # nobody will read these (a closed loop, a gone server): stop computing them
            for req, _ in items:
                req.cancelled = True
