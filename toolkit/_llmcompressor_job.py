"""llm-compressor job: quantize one HF checkpoint (run in llm-compressor's own venv).

Started by ``toolkit.hf_prepare.quantize`` as a subprocess; it imports nothing from
quantserve, because its venv pins a compressed-tensors that the vLLM venv does not accept.

    python _llmcompressor_job.py --src DIR --out DIR --scheme W8A8|W4A16 --method gptq|awq \
        --group-size 64 --calibration calibration.txt
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("quantserve.llmcompressor_job")


def calibration_samples(path: Path, tokenizer: Any, num_samples: int) -> list[str]:
    """Paragraphs, pairs of paragraphs and chat-formatted paragraphs from a local text file."""
    paragraphs = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    if not paragraphs:
        raise SystemExit(f"calibration file {path} is empty")
    samples = list(paragraphs)
    samples += [f"{a}\n\n{b}" for a, b in itertools.pairwise(paragraphs)]
    if getattr(tokenizer, "chat_template", None):
        for text in paragraphs:
            chat = [{"role": "user", "content": "Continue this text."}, {"role": "assistant", "content": text}]
            samples.append(tokenizer.apply_chat_template(chat, tokenize=False))
    while len(samples) < num_samples:  # a short file: repeat it rather than calibrate on too little
        samples += samples[: num_samples - len(samples)]
    return samples[:num_samples]


def build_recipe(scheme: str, method: str, group_size: int) -> list[Any]:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme  # type: ignore[import-not-found, import-untyped, unused-ignore]
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier  # type: ignore[import-not-found, unused-ignore]

    config: dict[str, Any]
    if scheme == "W8A8":
        # INT8 weights per output channel, INT8 activations per token (dynamic).
        config = {"scheme": "W8A8", "targets": ["Linear"]}
    else:
        # 4-bit symmetric weights in groups of ``group_size`` (the preset W4A16 uses 128).
        weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=group_size)
        config = {"config_groups": {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}}
    if method == "gptq":
        if scheme == "W8A8":
            # llm-compressor's INT8 recipe: SmoothQuant moves activation outliers into the
            # weights first, so per-token INT8 activations lose less.
            from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier  # type: ignore[import-not-found, unused-ignore]

            return [SmoothQuantModifier(smoothing_strength=0.8), GPTQModifier(ignore=["lm_head"], **config)]
        return [GPTQModifier(ignore=["lm_head"], **config)]
    from llmcompressor.modifiers.transform.awq import AWQModifier  # type: ignore[import-not-found, unused-ignore]

    return [AWQModifier(), QuantizationModifier(ignore=["lm_head"], **config)]


def skip_pinning_without_accelerator() -> None:
    """llm-compressor 0.14's AWQ pins cached activations for faster host-to-device copies; with
    no accelerator torch refuses to pin ("Cannot access accelerator device"), so on a CPU-only
    machine pinning is skipped (it only ever helped the copy to a GPU)."""
    import torch  # type: ignore[import-not-found, unused-ignore]
    from llmcompressor.pipelines.cache import IntermediatesCache  # type: ignore[import-not-found, unused-ignore]

    if torch.cuda.is_available() or not hasattr(IntermediatesCache, "_pin_intermediate"):
        return
    IntermediatesCache._pin_intermediate = classmethod(lambda cls, intermediate: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scheme", choices=["W8A8", "W4A16"], required=True)
    parser.add_argument("--method", choices=["gptq", "awq"], default="gptq")
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--calibration", type=Path, required=True)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import torch  # type: ignore[import-not-found, unused-ignore]
    from datasets import Dataset  # type: ignore[import-not-found, unused-ignore]
    from llmcompressor import oneshot  # type: ignore[import-not-found, unused-ignore]
    from transformers import AutoModelForCausalLM, AutoTokenizer  # type: ignore[import-not-found, unused-ignore]

    started = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(args.src)
    model = AutoModelForCausalLM.from_pretrained(args.src, dtype=torch.bfloat16)
    texts = calibration_samples(args.calibration, tokenizer, args.num_samples)
    encoded = tokenizer(texts, truncation=True, max_length=args.max_seq_length, add_special_tokens=False)
    dataset = Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    logger.info("calibrating on %d samples (%d tokens)", len(texts), sum(len(i) for i in encoded["input_ids"]))
    if args.method == "awq":
        skip_pinning_without_accelerator()

    oneshot(
        model=model,
        tokenizer=tokenizer,
        dataset=dataset,
        recipe=build_recipe(args.scheme, args.method, args.group_size),
        num_calibration_samples=len(texts),
        max_seq_length=args.max_seq_length,
        shuffle_calibration_samples=False,
    )
    model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)
    logger.info(
        "saved %s %s checkpoint to %s in %.0f s", args.method, args.scheme, args.out, time.monotonic() - started
    )


if __name__ == "__main__":
    main()
