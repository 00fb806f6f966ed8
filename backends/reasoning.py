"""The model's reasoning, split from its answer once, for every engine.

Reasoning models write their thoughts between markers before answering (``<think>…</think>``
for Qwen3, QwQ, DeepSeek-R1, SmolLM3, Kimi, GLM…; ``[THINK]…[/THINK]`` for Magistral; gpt-oss
its analysis channel). ``ReasoningSplitter`` cuts a streamed completion into ``reasoning`` and
``text`` (the answer) as it arrives; ``split_chunk`` applies it to each chunk of an engine's stream,
so each ``GenerationChunk`` carries both and every API route (chat ``reasoning_content``, and
later thinking blocks / reasoning items) only reads the two fields.

Handled: a block the model opens itself; a block the chat template already opened (its
generation prompt ends with the open marker, as DeepSeek-R1 and QwQ do); a block the template
closed (``enable_thinking: false`` renders an empty one); a block never closed (cut by
``max_tokens``): all of it is reasoning. Only a block at the start of the answer counts, as
llama-server and vLLM parse it: a marker later in the text is content.

gpt-oss writes headers around its channels, not markers a reader should see: after the analysis
channel a new turn opens (``<|start|>assistant``), and the answer is the final channel
(``<|channel|>final<|message|>``), which may also come first when the model skips its analysis.
Both are dropped; any other channel (``commentary`` to a function: a tool call) stays in the text
for the family's call parser. llama.cpp writes these control tokens out (it marks them
user-defined for gpt-oss), so they reach the splitter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from backends.textstream import partial_suffix
from backends.types import GenerationChunk, GenerationRequest, JsonConstraint, ToolCallConstraint


@dataclass(frozen=True, slots=True)
class ReasoningMarkers:
    open: str
    close: str
    # A new turn's header right after the close (gpt-oss: ``<|start|>assistant``); removed.
    turn_start: str = ""
    # The answer's own header (gpt-oss's final channel), removed where the answer starts: right
    # after the close (and turn_start), or first thing when the model wrote no block.
    answer_prefix: str = ""

    def opened_by(self, prompt: str) -> bool:
        """Did the rendered prompt open a block the model is to continue?"""
        at = prompt.rfind(self.open)
        return at >= 0 and prompt.find(self.close, at) < 0


class ReasoningSplitter:
    """Incremental: ``feed`` returns (reasoning, text) for each piece; nothing that may still turn
    out to be a marker is released until it is decided."""

    def __init__(self, markers: ReasoningMarkers, *, inside: bool = False) -> None:
        self._m = markers
        # "start": before the answer's first visible character; "think"; "after": just closed
        # (leading whitespace and the turn header are dropped); "answer": where the answer's
        # header may come; "text": the answer.
        self._state = "think" if inside else "start"
        self._buf = ""
        # Tokens sampled while the block was open, its markers included (usage reports them).
        self.reasoning_tokens = 0

    @property
    def thinking(self) -> bool:
        return self._state == "think"

    def feed(self, piece: str) -> tuple[str, str]:
        self._buf += piece
        reasoning: list[str] = []
        text: list[str] = []
        while self._buf:
            if self._state == "start":
                body = self._buf.lstrip()
                if body.startswith(self._m.open):
                    self._buf, self._state = body[len(self._m.open) :], "think"
                    continue
                if self._m.open.startswith(body):
                    break  # still possibly the marker (or only whitespace so far)
                self._state = "answer"  # the whitespace stays: a plain answer keeps it
            elif self._state == "think":
                end = self._buf.find(self._m.close)
                if end >= 0:
                    reasoning.append(self._buf[:end])
                    self._buf, self._state = self._buf[end + len(self._m.close) :], "after"
                    continue
                keep = partial_suffix(self._buf, self._m.close)
                reasoning.append(self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep :]
                break
            elif self._state == "after":
                if not self._header(self._m.turn_start, "answer", strip=True):
                    break
            elif self._state == "answer":
                if not self._header(self._m.answer_prefix, "text", strip=False):
                    break
            else:
                text.append(self._buf)
                self._buf = ""
        return "".join(reasoning), "".join(text)

    def _header(self, header: str, then: str, *, strip: bool) -> bool:
        """Drop ``header`` (and whitespace before it) if the buffer starts with it, then move to
        ``then``; False while the buffer could still become it. ``strip``: whitespace before
        whatever follows is dropped too."""
        body = self._buf.lstrip()
        if header and body.startswith(header):
            self._buf, self._state = body[len(header) :], then
        elif not body or (header and header.startswith(body)):
            return False
        else:
            self._buf, self._state = body if strip else self._buf, then
        return True

    def finish(self) -> tuple[str, str]:
        """End of output: an unclosed block is all reasoning; a header cut short (by max_tokens)
        is neither; anything else held back is text."""
        rest, self._buf = self._buf, ""
        if self._state == "think":
            return rest, ""
        if self._state in ("after", "answer"):  # all it holds is whitespace or part of a header
            return "", ""
        return "", rest


def reasoning_fields(reasoning: str) -> dict[str, str]:
    """An earlier assistant turn's reasoning as templates read it: most as ``reasoning_content``;
    gpt-oss and LFM2 as ``thinking`` (llama.cpp copies it there for them). Both, since a
    template that knows both prefers one (Cohere's)."""
    return {"reasoning_content": reasoning, "thinking": reasoning}


def template_switches(*, enable: bool | None = None, effort: str | None = None) -> dict[str, Any]:
    """The chat-template variables that switch a family's reasoning, as llama-server sets them
    from a request: ``enable_thinking`` (Qwen3, SmolLM3, DeepSeek, GLM, ...) and
    ``reasoning_effort`` (gpt-oss and others); effort "none" means no reasoning. A template that
    does not know a variable ignores it."""
    out: dict[str, Any] = {}
    if effort == "none":
        enable = False if enable is None else enable
    elif effort is not None:
        out["reasoning_effort"] = effort
    if enable is not None:
        out["enable_thinking"] = enable
    return out


def splitter_for(markers: ReasoningMarkers | None, req: GenerationRequest, prompt: str) -> ReasoningSplitter | None:
    """The splitter for one chat request's output, given its rendered prompt; None when the
    family has no markers or the client asked for the raw text (``reasoning_format: none``)."""
    if markers is None or not req.split_reasoning or req.messages is None:
        return None
    # Output constrained from its first token (JSON, calls the model must make) can never close a
    # block the template opened: what the model writes there is its answer, not reasoning.
    c = req.constraint
    forced = isinstance(c, JsonConstraint) or (isinstance(c, ToolCallConstraint) and c.required)
    return ReasoningSplitter(markers, inside=markers.opened_by(prompt) and not forced)


def split_chunk(splitter: ReasoningSplitter | None, chunk: GenerationChunk) -> GenerationChunk:
    """One engine chunk with its text split into ``reasoning`` and ``text`` (the last chunk
    also releases whatever the splitter held back, and its usage counts the reasoning tokens)."""
    if splitter is None:
        return chunk
    was_thinking = splitter.thinking
    reasoning, text = splitter.feed(chunk.text)
    if was_thinking or splitter.thinking:  # the chunk opened, continued or closed the block
        splitter.reasoning_tokens += chunk.tokens
    if chunk.finish_reason is None:
        return replace(chunk, text=text, reasoning=reasoning)
    more_reasoning, more_text = splitter.finish()
    usage = chunk.usage
    if usage is not None:
        usage = replace(usage, reasoning_tokens=min(splitter.reasoning_tokens, usage.completion_tokens))
    return replace(chunk, text=text + more_text, reasoning=reasoning + more_reasoning, usage=usage)
