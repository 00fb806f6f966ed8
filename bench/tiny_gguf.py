"""A tiny llama GGUF with the default model's tokenizer and random weights: a CPU stand-in for a
GPU's decode speed, where a step's model work is small and the host-side work of a server shows.

    .venv/bin/python -m bench.tiny_gguf [--out PATH] [--layers 2] [--embd 64]

SmolLM2-135M's decode costs ~8 ms a step on 2 CPU cores and 1-2 ms on an H100. This model keeps
everything a server does per token the same (the 49,152-token vocabulary and its logits rows, the
tokenizer, the chat template, end tokens) and shrinks the network (2 layers, width 64), so a decode
step of a few sequences takes well under a millisecond here. Its text is noise; benchmarks send
``ignore_eos`` so every stream has the same length. Not a model to serve: a benchmark fixture.

It imports gguf-py, which is fine in a bench process and never happens in the server's.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from bench.common import default_model_path

log = logging.getLogger("bench.tiny_gguf")

# Tokenizer and chat-template keys copied from the source model unchanged.
_COPIED = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
    "tokenizer.chat_template",
)


def default_tiny_path() -> Path:
    return Path.home() / ".cache" / "quantserve" / "models" / "tiny-smollm2-vocab.gguf"


def write_tiny(src: Path, dst: Path, *, layers: int = 2, embd: int = 64, seed: int = 0) -> Path:
    import gguf

    reader = gguf.GGUFReader(src)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].contents())
    heads, kv_heads, ffn = 4, 2, 2 * embd
    head_dim = embd // heads
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("tiny random llama, SmolLM2 vocabulary (benchmark fixture)")
    writer.add_block_count(layers)
    writer.add_context_length(8192)
    writer.add_embedding_length(embd)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for key in _COPIED:
        field = reader.fields.get(key)
        if field is None:
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), value_type, sub_type=sub_type)
    rng = np.random.default_rng(seed)

    def weight(rows: int, cols: int) -> np.ndarray:
        # numpy (rows, cols) is ggml's (ne0=cols, ne1=rows): a matrix mapping cols inputs to rows outputs.
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float16)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    # Tied output, as SmolLM2: the logits come from the token embedding.
    writer.add_tensor("token_embd.weight", (rng.standard_normal((n_vocab, embd)) * 0.5).astype(np.float16))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones(embd))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(embd, embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_heads * head_dim, embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_heads * head_dim, embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(embd, embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones(embd))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(embd, ffn))
    writer.add_tensor("output_norm.weight", ones(embd))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=None, help="the GGUF whose tokenizer to copy (default model)")
    parser.add_argument("--out", type=Path, default=default_tiny_path())
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = write_tiny(args.src or default_model_path(), args.out, layers=args.layers, embd=args.embd)
    log.info("wrote %s (%.1f MiB)", path, path.stat().st_size / 2**20)


if __name__ == "__main__":
    main()
