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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from backends.textstream import partial_suffix
from backends.types import GenerationChunk, GenerationRequest


@dataclass(frozen=True, slots=True)
class ReasoningMarkers:
    open: str
    close: str
    # Text between the close marker and the answer that belongs to neither (gpt-oss's header of
    # its final channel); removed when it comes right after the close.
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
        # (leading whitespace and the answer prefix are dropped); "text": the answer.
        self._state = "think" if inside else "start"
        self._buf = ""

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
                self._state = "text"
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
                body = self._buf.lstrip()
                prefix = self._m.answer_prefix
                if prefix and body.startswith(prefix):
                    self._buf, self._state = body[len(prefix) :].lstrip(), "text"
                    continue
                if not body or (prefix and prefix.startswith(body)):
                    break
                self._buf, self._state = body, "text"
            else:
                text.append(self._buf)
                self._buf = ""
        return "".join(reasoning), "".join(text)

    def finish(self) -> tuple[str, str]:
        """End of output: an unclosed block is all reasoning; anything else held back is text."""
        rest, self._buf = self._buf, ""
        if self._state == "think":
            return rest, ""
        if self._state == "after":
            return "", rest.lstrip()
        return "", rest


def splitter_for(markers: ReasoningMarkers | None, req: GenerationRequest, prompt: str) -> ReasoningSplitter | None:
    """The splitter for one chat request's output, given its rendered prompt; None when the
    family has no markers or the client asked for the raw text (``reasoning_format: none``)."""
    if markers is None or not req.split_reasoning or req.messages is None:
        return None
    return ReasoningSplitter(markers, inside=markers.opened_by(prompt))


def split_chunk(splitter: ReasoningSplitter | None, chunk: GenerationChunk) -> GenerationChunk:
    """One engine chunk with its text split into ``reasoning`` and ``text`` (the last chunk
    also releases whatever the splitter held back)."""
    if splitter is None:
        return chunk
    reasoning, text = splitter.feed(chunk.text)
    if chunk.finish_reason is not None:
        more_reasoning, more_text = splitter.finish()
        reasoning, text = reasoning + more_reasoning, text + more_text
    return replace(chunk, text=text, reasoning=reasoning)
