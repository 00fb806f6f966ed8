"""Model references as users write them, resolved to a local path.

- a local ``.gguf`` file or an HF-style directory (AWQ / GPTQ / compressed-tensors / safetensors);
- ``org/repo`` or ``org/repo:QUANT`` (as ``llama-server -hf`` and ``ollama run hf.co/...`` take
  them; ``hf.co/`` and ``huggingface.co/`` prefixes are accepted): a GGUF repo gives one file,
  picked by ``QUANT`` or, without it, the best that fits this machine's memory (Q4_K_M first);
  a repo without GGUF files is fetched whole as an HF checkpoint directory;
- ``hf://org/repo/path/file.gguf``: that file.

Everything goes through ``huggingface_hub``: its cache (``HF_HOME`` / ``HF_HUB_CACHE``), its token
(``HF_TOKEN``), its resumable downloads and progress bars, and its offline mode
(``HF_HUB_OFFLINE=1``). Once a reference is cached it resolves without the network. A split
GGUF (``name-00001-of-00003.gguf``) is fetched whole, and the first part is what llama.cpp opens.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from backends.errors import ConfigError

log = logging.getLogger(__name__)

_REPO = r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
_HUB_REF = re.compile(rf"^(?:(?:hf\.co|huggingface\.co)/)?(?P<repo>{_REPO})(?::(?P<quant>[A-Za-z0-9_.-]+))?$")
_HF_URL = re.compile(rf"^hf://(?P<repo>{_REPO})/(?P<file>.+\.gguf)$")
_SPLIT = re.compile(r"-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# The quantization label in a GGUF file name: "...-Q4_K_M.gguf", "....q8_0.gguf", "...-IQ4_XS.gguf".
_QUANT_IN_NAME = re.compile(
    r"(?:^|[-_.])(?P<quant>I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?:-\d{5}-of-\d{5})?\.gguf$", re.IGNORECASE
)
# Picked in this order when a reference names no quantization (the first that fits memory):
# Q4_K_M is what llama.cpp, Ollama and LM Studio default to; then nearby sizes, larger first.
QUANT_PREFERENCE = (
    "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q4_0", "Q4_1", "IQ4_XS", "IQ4_NL", "Q6_K", "Q8_0",
    "Q3_K_M", "Q3_K_L", "Q3_K_S", "IQ3_M", "IQ3_XS", "Q2_K", "IQ2_M", "BF16", "F16", "F32",
)  # fmt: skip
# Files an HF checkpoint directory needs; the rest of a repo (other formats, images) is skipped.
CHECKPOINT_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py", "*.tiktoken")
# Weights take this share of host memory at most when picking a quantization (KV cache and
# compute buffers need the rest).
_FIT_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class HubRef:
    """A model on the Hugging Face Hub: a repo, and maybe a quantization or one file in it."""

    repo_id: str
    quant: str | None = None
    filename: str | None = None
    revision: str = "main"

    def __str__(self) -> str:
        if self.filename is not None:
            return f"hf://{self.repo_id}/{self.filename}"
        return self.repo_id + (f":{self.quant}" if self.quant else "")


ModelRef = Path | HubRef


def parse_ref(text: str) -> ModelRef:
    """A path when it exists (or looks like one), else a hub reference."""
    text = text.strip()
    if not text:
        raise ConfigError("empty model reference")
    url = _HF_URL.match(text)
    if url:
        return HubRef(url["repo"], filename=url["file"])
    if text.startswith("hf://"):
        raise ConfigError(f"model reference {text!r}: use hf://org/repo/file.gguf, or org/repo[:QUANT]")
    path = Path(text).expanduser()
    if path.exists() or text.startswith((".", "/", "~")) or text.lower().endswith(".gguf"):
        return path
    hub = _HUB_REF.match(text)
    if hub:
        return HubRef(hub["repo"], quant=hub["quant"])
    return path


def quant_of(filename: str) -> str | None:
    """The quantization a GGUF file name announces, upper-cased (``None`` if it names none)."""
    match = _QUANT_IN_NAME.search(Path(filename).name)
    return match["quant"].upper() if match else None


def split_parts(filename: str, files: list[str] | None = None) -> list[str]:
    """All parts of a split GGUF (in order) when ``filename`` is one of them; else just it.
    With ``files`` (a repo's listing), a part missing from it is an error."""
    match = _SPLIT.search(filename)
    if not match:
        return [filename]
    stem = filename[: match.start()]
    count = int(match["count"])
    wanted = [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    missing = [w for w in wanted if files is not None and w not in files]
    if missing:
        raise ConfigError(f"split GGUF {Path(stem).name} is incomplete in the repo: missing {', '.join(missing)}")
    return wanted


def pick_gguf(ref: HubRef, sizes: dict[str, int], available: int | None) -> str:
    """The GGUF file (its first part, when split) that ``ref`` means among a repo's files."""
    ggufs = {f: s for f, s in sizes.items() if f.lower().endswith(".gguf") and "mmproj" not in f.lower()}
    firsts = [f for f in ggufs if (m := _SPLIT.search(f)) is None or int(m["part"]) == 1]
    by_quant: dict[str, list[str]] = {}
    for f in sorted(firsts):
        by_quant.setdefault(quant_of(f) or "", []).append(f)
    if ref.quant is not None:
        found = by_quant.get(ref.quant.upper())
        if not found:
            named = ", ".join(sorted(q for q in by_quant if q)) or "none"
            raise ConfigError(f"{ref.repo_id} has no {ref.quant.upper()} GGUF file; it has: {named}")
        return found[0]

    def total(first: str) -> int:
        return sum(ggufs.get(p, 0) for p in split_parts(first, list(ggufs)))

    ranked = [by_quant[q][0] for q in QUANT_PREFERENCE if q in by_quant]
    ranked += [fs[0] for q, fs in sorted(by_quant.items()) if q not in QUANT_PREFERENCE]
    if not ranked:
        raise ConfigError(f"{ref.repo_id} has no GGUF files")
    limit = None if available is None else available * _FIT_SHARE
    fitting = [f for f in ranked if limit is None or total(f) <= limit]
    if fitting:
        return fitting[0]
    smallest = min(ranked, key=total)
    log.warning("no GGUF file in %s fits in memory comfortably; taking the smallest, %s", ref.repo_id, smallest)
    return smallest


def resolve(ref: ModelRef, *, download: bool = True) -> Path:
    """The local path of ``ref``, downloading what is missing (unless ``download`` is false)."""
    if isinstance(ref, Path):
        return ref
    from server.runtime import hub

    return hub.fetch(ref, download=download)


def default_model_id(text: str, ref: ModelRef) -> str:
    """The id a model gets when served by reference: the file name without ``.gguf`` for a local
    path (as ``--model`` always did), the reference as written for the hub."""
    if isinstance(ref, Path):
        return ref.name.removesuffix(".gguf") or text
    return str(ref)
