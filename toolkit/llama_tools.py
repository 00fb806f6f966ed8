"""llama.cpp's own command-line tools (``llama-perplexity``, ``llama-imatrix``), built once from
the llama.cpp sources inside the pinned llama-cpp-python sdist, in the same cached build tree as
the benchmarks' llama-server (``~/.cache/quantserve/llama-server-build``); never committed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from backends.cache import cache_root

logger = logging.getLogger(__name__)

SDIST = "llama-cpp-python==0.3.36"
BUILD_ROOT = cache_root() / "llama-server-build"
# The flags our llama-cpp-python wheel is built with, so both sides run the same kernels.
CMAKE_FLAGS = ("-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON")


class ToolBuildError(RuntimeError):
    pass


def _sources(root: Path) -> Path:
    src = root / "src"
    if (src / "CMakeLists.txt").exists():
        return src
    sdist_dir = root / "sdist"
    sdists = sorted(sdist_dir.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        logger.info("downloading the %s sdist", SDIST)
        pip = [sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "--no-binary", ":all:", "-d"]
        subprocess.run([*pip, str(sdist_dir)], check=True)
        sdists = sorted(sdist_dir.glob("llama_cpp_python-*.tar.gz"))
    with tarfile.open(sdists[-1]) as tar:
        prefix = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for m in members:
            m.name = m.name[len(prefix) :]
        tar.extractall(src, members=[m for m in members if m.name], filter="data")
    return src


def llama_cpp_sources(root: Path = BUILD_ROOT) -> Path:
    """The llama.cpp source tree vendored in the pinned sdist (downloaded and unpacked on first use)."""
    return _sources(root)


def chat_templates(root: Path = BUILD_ROOT) -> list[Path]:
    """The real chat templates llama.cpp tests itself against (``models/templates/*.jinja``)."""
    return sorted((_sources(root) / "models" / "templates").glob("*.jinja"))


def build_tool(target: str, root: Path = BUILD_ROOT) -> Path:
    """Path of ``build/bin/TARGET``, configured and built on first use (minutes on 2 cores)."""
    binary = root / "build" / "bin" / target
    if binary.exists():
        return binary
    src, build = _sources(root), root / "build"
    if not (build / "build.ninja").exists() and not (build / "Makefile").exists():
        configure = ["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *CMAKE_FLAGS]
        configure += ["-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF"]
        subprocess.run(configure, check=True)
    logger.info("building %s in %s", target, build)
    jobs = str(os.cpu_count() or 1)
    subprocess.run(["cmake", "--build", str(build), "--target", target, "-j", jobs], check=True)
    if not binary.exists():
        raise ToolBuildError(f"building {target} produced no {binary}")
    return binary


def compute_imatrix(model: Path, text: Path, out: Path, *, n_ctx: int = 256, threads: int | None = None) -> Path:
    """An importance matrix for ``model`` from ``text`` with llama.cpp's ``llama-imatrix``."""
    tool = build_tool("llama-imatrix")
    cmd = [str(tool), "-m", str(model), "-f", str(text), "-o", str(out), "-c", str(n_ctx)]
    cmd += ["-t", str(threads or os.cpu_count() or 1), "--no-ppl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ToolBuildError(f"llama-imatrix failed (exit {proc.returncode}):\n{tail}")
    return out
