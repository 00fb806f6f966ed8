"""Hub references end to end: the real ``huggingface_hub`` client (inside ``quantserve pull``,
``list``, ``rm`` and ``serve``) against a local stand-in for the hub's file endpoints
(``tests/hubstub.py``), since these machines reach no model hub. The repos are built from the
default GGUF and the W4A16 vLLM fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.settings import DEFAULT_MODELS_DIR
from tests.e2e.conftest import Server, free_port
from tests.hubstub import HubStub

GGUF_REPO = "acme/smol-GGUF"
SPLIT_REPO = "acme/split-GGUF"
CHECKPOINT_REPO = "acme/smol-W4A16"
W4A16 = DEFAULT_MODELS_DIR / "SmolLM2-135M-Instruct-W4A16-gptq-g64"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[HubStub]:
    root = tmp_path_factory.mktemp("hub")
    stub = HubStub(root)
    stub.add_file(GGUF_REPO, "smol-Q4_K_M.gguf", model_path)
    stub.add_file(GGUF_REPO, "smol-Q8_0.gguf", model_path)
    stub.add_file(GGUF_REPO, "README.md", b"# smol\n")
    data = model_path.read_bytes()
    half = len(data) // 2
    stub.add_file(SPLIT_REPO, "split-Q4_0-00001-of-00002.gguf", data[:half])
    stub.add_file(SPLIT_REPO, "split-Q4_0-00002-of-00002.gguf", data[half:])
    if W4A16.is_dir():
        for f in W4A16.iterdir():
            stub.add_file(CHECKPOINT_REPO, f.name, f)
        stub.add_file(CHECKPOINT_REPO, "README.md", b"# w4a16\n")
    with stub.running():
        yield stub


@pytest.fixture
def hf_env(hub: HubStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh HF cache per test, pointed at the stand-in (set in os.environ too, for Server)."""
    env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return env


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )


def pulled(result: subprocess.CompletedProcess[str]) -> Path:
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().split("\t")[1])


def test_pull_picks_q4_k_m_then_a_named_quant(hf_env: dict[str, str], model_path: Path) -> None:
    default = pulled(cli("pull", GGUF_REPO))
    assert default.name == "smol-Q4_K_M.gguf"
    assert default.read_bytes()[:4] == b"GGUF" and default.stat().st_size == model_path.stat().st_size
    assert str(default).startswith(hf_env["HF_HOME"])  # huggingface_hub's own cache, under HF_HOME
    assert pulled(cli("pull", f"hf.co/{GGUF_REPO}:q8_0")).name == "smol-Q8_0.gguf"
    assert pulled(cli("pull", f"hf://{GGUF_REPO}/smol-Q8_0.gguf")).name == "smol-Q8_0.gguf"
    missing = cli("pull", f"{GGUF_REPO}:Q5_K_M")
    assert missing.returncode == 1
    assert "acme/smol-GGUF has no Q5_K_M GGUF file; it has: Q4_K_M, Q8_0" in missing.stderr
    unknown = cli("pull", "acme/no-such-repo")
    assert unknown.returncode == 1 and "'acme/no-such-repo' not found on the hub" in unknown.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr


def test_a_split_gguf_is_fetched_whole(hf_env: dict[str, str], model_path: Path) -> None:
    first = pulled(cli("pull", SPLIT_REPO))
    assert first.name == "split-Q4_0-00001-of-00002.gguf"
    second = first.with_name("split-Q4_0-00002-of-00002.gguf")
    assert first.read_bytes() + second.read_bytes() == model_path.read_bytes()


def test_an_interrupted_download_resumes(hf_env: dict[str, str], hub: HubStub, model_path: Path) -> None:
    hub.requests.clear()
    hub.cut_next_download = 10 << 20  # the connection drops after 10 MiB
    path = pulled(cli("pull", f"{GGUF_REPO}:Q4_K_M"))
    assert path.read_bytes() == model_path.read_bytes()
    ranges = [r for method, p, r in hub.requests if method == "GET" and p.endswith("smol-Q4_K_M.gguf")]
    assert ranges == [None, f"bytes={10 << 20}-"]


def test_offline_once_cached(hf_env: dict[str, str]) -> None:
    path = pulled(cli("pull", GGUF_REPO))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the hub is unreachable
    assert pulled(cli("pull", GGUF_REPO, HF_ENDPOINT=dead)) == path
    assert pulled(cli("pull", GGUF_REPO, HF_HUB_OFFLINE="1")) == path
    not_cached = cli("pull", SPLIT_REPO, HF_ENDPOINT=dead)
    assert not_cached.returncode == 1
    assert f"{SPLIT_REPO} is not cached and the hub ({dead}) cannot be reached" in not_cached.stderr


def test_hf_token_is_sent(hf_env: dict[str, str], hub: HubStub) -> None:
    hub.tokens.clear()
    pulled(cli("pull", f"{GGUF_REPO}:Q8_0", HF_TOKEN="hf_secret"))
    assert hub.tokens and set(hub.tokens) == {"Bearer hf_secret"}


@pytest.mark.skipif(not W4A16.is_dir(), reason="the W4A16 fixture is made by `quantserve models prepare --vllm`")
def test_a_checkpoint_repo_is_fetched_as_a_directory(hf_env: dict[str, str], tmp_path: Path) -> None:
    folder = pulled(cli("pull", CHECKPOINT_REPO))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f.name for f in W4A16.iterdir() if f.suffix in {".json", ".safetensors", ".jinja"}
    )
    listing = cli("list", "--models-dir", str(tmp_path / "none"))
    assert listing.returncode == 0
    assert [line.split() for line in listing.stdout.splitlines()][1][:3] == [
        CHECKPOINT_REPO,
        "compressed-tensors",
        "compressed-tensors",
    ]


def test_list_and_rm(hf_env: dict[str, str], tmp_path: Path) -> None:
    pulled(cli("pull", f"{GGUF_REPO}:Q4_K_M"))
    pulled(cli("pull", f"{GGUF_REPO}:Q8_0"))
    rows = [line.split() for line in cli("list", "--models-dir", str(tmp_path / "none")).stdout.splitlines()]
    assert rows == [
        ["MODEL", "FORMAT", "QUANT", "SIZE"],
        [f"{GGUF_REPO}:Q4_K_M", "gguf", "Q4_K_M", "94", "MiB"],
        [f"{GGUF_REPO}:Q8_0", "gguf", "Q8_0", "94", "MiB"],
    ]
    assert cli("rm", f"{GGUF_REPO}:Q8_0").returncode == 0
    rows = [line.split()[0] for line in cli("list", "--models-dir", str(tmp_path / "none")).stdout.splitlines()]
    assert rows == ["MODEL", f"{GGUF_REPO}:Q4_K_M"]
    assert cli("rm", GGUF_REPO).stdout.startswith(f"deleted {GGUF_REPO} (94 MiB freed)")
    assert cli("list", "--models-dir", str(tmp_path / "none")).stdout.splitlines() == ["MODEL  FORMAT  QUANT  SIZE"]
    again = cli("rm", GGUF_REPO)
    assert again.returncode == 1 and "acme/smol-GGUF is not in the cache" in again.stderr
    local = cli("rm", str(DEFAULT_MODELS_DIR))
    assert local.returncode == 2 and "is a local path" in local.stderr


def test_serve_a_hub_reference(hf_env: dict[str, str], tmp_path: Path) -> None:
    ref = f"{GGUF_REPO}:Q4_K_M"
    srv = Server([ref], tmp_path / "serve.log")
    try:
        srv.wait_ready()
        cards = httpx.get(f"{srv.base_url}/v1/models").json()["data"]
        assert [c["id"] for c in cards] == [ref]
        body = {
            "model": ref,
            "messages": [{"role": "user", "content": "Which city is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 20,
        }
        answer = httpx.post(f"{srv.base_url}/v1/chat/completions", json=body, timeout=60).json()
        assert "Paris" in answer["choices"][0]["message"]["content"]
    finally:
        srv.stop()
