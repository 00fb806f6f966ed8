"""``quantserve serve`` start-up: config errors are one clear line and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import Server


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "0", *args], capture_output=True, text=True, timeout=120
    )


def test_config_typo_fails_naming_the_field(tmp_path: Path, model_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"models:\n  - id: a\n    path: {model_path}\n    options: {{n_ctxx: 512}}\n")
    result = run_serve("--config", str(config))
    assert result.returncode == 2
    assert "options.n_ctxx: Extra inputs are not permitted" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    result = run_serve("--model", str(tmp_path / "nope.gguf"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_a_model_fails_to_load_cleanly(tmp_path: Path) -> None:
    fake = tmp_path / "broken.gguf"
    fake.write_bytes(b"GGUF but not really")
    result = run_serve("--model", str(fake))
    assert result.returncode == 1
    assert "llama.cpp could not load broken.gguf" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_chat_template_that_does_not_compile_fails_naming_the_model(tmp_path: Path, model_path: Path) -> None:
    config = tmp_path / "bad-template.yaml"
    template = "{% for m in messages %}{{ m.content }}{% endfor"  # unclosed tag
    config.write_text(
        f"models:\n  - id: broken-template\n    path: {model_path}\n    options: {{chat_template: '{template}'}}\n"
    )
    result = run_serve("--config", str(config))
    assert result.returncode == 1
    assert "model 'broken-template': its chat template does not compile (line 1:" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_model_path_and_two_models_from_config(tmp_path: Path, model_path: Path) -> None:
    config = tmp_path / "two.yaml"
    config.write_text(
        "models:\n"
        f"  - {{id: small-ctx, path: {model_path}, options: {{n_ctx: 512}}}}\n"
        f"  - {{id: q8-kv, path: {model_path}, options: {{n_ctx: 2048, cache_type_k: q8_0,"
        " cache_type_v: q8_0, flash_attn: true}}\n"
    )
    srv = Server(["--config", str(config)], tmp_path / "log.txt")
    try:
        srv.wait_ready()
        cards = {m["id"]: m for m in httpx.get(f"{srv.base_url}/v1/models").json()["data"]}
        assert {k: v["context_length"] for k, v in cards.items()} == {"small-ctx": 512, "q8-kv": 2048}
        answers: dict[str, str] = {}
        for model in cards:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
                "temperature": 0,
                "max_tokens": 20,
            }
            resp = httpx.post(f"{srv.base_url}/v1/chat/completions", json=body, timeout=60)
            answers[model] = resp.json()["choices"][0]["message"]["content"]
        assert "Paris" in answers["small-ctx"]
        # The q8_0 KV cache really is in use: it shifts this 135M model's greedy answer
        # (measured: it no longer names Paris), while it still answers the question.
        assert "capital" in answers["q8-kv"] and answers["q8-kv"] != answers["small-ctx"]
    finally:
        srv.stop()
    srv = Server(["--model", str(model_path)], tmp_path / "log2.txt")
    try:
        srv.wait_ready()
        ids = [m["id"] for m in httpx.get(f"{srv.base_url}/v1/models").json()["data"]]
        assert ids == [model_path.name.removesuffix(".gguf")]
    finally:
        srv.stop()


def test_ps_lists_the_loaded_models_of_a_running_server(server: Server) -> None:
    def ps(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", "ps", "--url", server.base_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    auth = {"Authorization": "Bearer sk-test"}
    for _ in range(300):  # the memory estimate is read in the background after start-up
        if httpx.get(f"{server.base_url}/v1/models", headers=auth).json()["data"][0]["status"]["memory_bytes"]:
            break
        time.sleep(0.1)
    shown = ps("--api-key", "sk-test")
    assert shown.returncode == 0, shown.stderr
    header, row = (line.split() for line in shown.stdout.splitlines())
    assert header == ["MODEL", "STATE", "MEMORY", "RUN/WAIT", "IDLE", "UNLOADS", "IN"]
    assert row[:2] == ["smollm2-135m-instruct", "loaded"] and row[3] == "MiB" and row[-1] == "forever"
    refused = ps()  # no key: the server's 401, said in one line
    assert refused.returncode == 1 and "answered 401" in refused.stderr and "Traceback" not in refused.stderr
