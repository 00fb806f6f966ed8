#!/usr/bin/env bash
# quantserve vs llama-server on an NVIDIA GPU, end to end, from the pinned llama-cpp-python sdist.
#
#   scripts/gpu-bench.sh [SDIST]        SDIST: llama_cpp_python-0.3.36.tar.gz or its unpacked folder
#                                       (default: pip download it)
#
# 1. build: llama.cpp for CUDA from the sources vendored in the sdist (shared libraries and
#    llama-server, one build), and point the sdist's Python bindings at it (LLAMA_CPP_LIB_PATH);
# 2. test:  the backend contract suite, GGUF part (tests/contract -k gguf) on those bindings;
# 3. bench: bench.llama_batching with every layer offloaded, 64 slots on both sides, 1/8/32/64
#    clients, greedy and default sampled requests: quantserve (numpy and backend sampling routes)
#    against llama-server from the same build, without and with --backend-sampling.
#
# Settings (environment): STEPS (build,test,bench), OUT_DIR (table and logs; default .gpu-bench),
# BUILD_DIR (default ~/.cache/quantserve/llama-cuda-build), CUDA_ARCH (90: Hopper), PYTHON,
# MODEL (default GGUF), CLIENTS, PARALLEL, GPU_LAYERS, TOKENS, ROUNDS, REPEATS (turns of the systems
# at each level, A B then B A: 2), SAMPLERS (numpy,backend),
# MODES (greedy,sampled), IGNORE_EOS (1: every stream runs to TOKENS, so sampled requests, whose
# default distributions differ between the servers, are compared on equal work; 0: they may end early).
# quantserve's Python dependencies must be importable by PYTHON (a venv, or wheels on PYTHONPATH).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${STEPS:-build,test,bench}
OUT_DIR=$(mkdir -p "${OUT_DIR:-$ROOT/.gpu-bench}" && cd "${OUT_DIR:-$ROOT/.gpu-bench}" && pwd)
BUILD_DIR=${BUILD_DIR:-$HOME/.cache/quantserve/llama-cuda-build}
CUDA_ARCH=${CUDA_ARCH:-90}
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-$HOME/.cache/quantserve/models/SmolLM2-135M-Instruct.Q4_1.gguf}
CLIENTS=${CLIENTS:-1,8,32,64}
PARALLEL=${PARALLEL:-64}
GPU_LAYERS=${GPU_LAYERS:-99}
TOKENS=${TOKENS:-128}
ROUNDS=${ROUNDS:-2}
REPEATS=${REPEATS:-2}
SAMPLERS=${SAMPLERS:-numpy,backend}
MODES=${MODES:-greedy,sampled}
IGNORE_EOS=${IGNORE_EOS:-1}
SRC=$BUILD_DIR/sdist
JOBS=$(nproc)

has_step() { [[ ",$STEPS," == *",$1,"* ]]; }
say() { echo "[gpu-bench $(date -u +%H:%M:%S)] $*"; }

unpack_sdist() {
    [[ -f $SRC/vendor/llama.cpp/CMakeLists.txt ]] && return
    local sdist=${1:-}
    if [[ -z $sdist ]]; then
        "$PYTHON" -m pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d "$BUILD_DIR/download"
        sdist=$(ls "$BUILD_DIR"/download/llama_cpp_python-*.tar.gz)
    fi
    mkdir -p "$SRC"
    if [[ -d $sdist ]]; then
        cp -a "$sdist"/. "$SRC"/
    else
        tar -xzf "$sdist" -C "$SRC" --strip-components=1
    fi
}

build() {
    say "building llama.cpp for CUDA (sm_$CUDA_ARCH) in $BUILD_DIR/build, $JOBS jobs"
    cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD_DIR/build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DBUILD_SHARED_LIBS=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$OUT_DIR/cmake.log" 2>&1
    cmake --build "$BUILD_DIR/build" --target llama-server llama mtmd -j "$JOBS" >>"$OUT_DIR/cmake.log" 2>&1
    # The bindings load libllama from LLAMA_CPP_LIB_PATH but libggml from their own lib/ folder.
    mkdir -p "$SRC/llama_cpp/lib"
    find "$BUILD_DIR/build" -name 'lib*.so*' -exec cp -a {} "$SRC/llama_cpp/lib/" \;
    touch "$BUILD_DIR/built"
    say "build done"
}

unpack_sdist "${1:-}"
has_step build && [[ ! -f $BUILD_DIR/built ]] && build
export LLAMA_CPP_LIB_PATH=$SRC/llama_cpp/lib
export PYTHONPATH=$ROOT:$SRC${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
cd "$ROOT"
"$PYTHON" -c 'import llama_cpp as lc; print("llama.cpp GPU offload:", bool(lc.llama_supports_gpu_offload()))'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT_DIR/gpu.txt"

if has_step test; then
    say "contract suite, GGUF part"
    # Only the plugin the suite needs: a GPU image's own pytest plugins (seen on a CUDA image with
    # PyTorch) loaded native code that made llama_model_load_from_file segfault.
    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PYTHON" -m pytest -p pytest_asyncio.plugin tests/contract -k gguf -q \
        -p no:cacheprovider 2>&1 | tee "$OUT_DIR/contract.log" | tail -3
fi

if has_step bench; then
    say "bench: clients $CLIENTS, $PARALLEL slots, $GPU_LAYERS GPU layers, samplers $SAMPLERS, ignore_eos $IGNORE_EOS"
    eos=()
    [[ $IGNORE_EOS == 1 ]] && eos=(--ignore-eos)
    "$PYTHON" -m bench.llama_batching --start-llama-server --start-quantserve \
        --llama-server-bin "$BUILD_DIR/build/bin/llama-server" --llama-server-variants default,backend-sampling \
        --quantserve-samplers "$SAMPLERS" --gpu-layers "$GPU_LAYERS" --model "$MODEL" \
        --threads "$(( JOBS < 8 ? JOBS : 8 ))" --parallel "$PARALLEL" --n-ctx 4096 --n-batch 2048 \
        --clients "$CLIENTS" --modes "$MODES" --tokens "$TOKENS" --rounds "$ROUNDS" --repeats "$REPEATS" "${eos[@]}" \
        --log-dir "$OUT_DIR/logs" \
        2>"$OUT_DIR/bench.log" | tee "$OUT_DIR/table.md"
fi
