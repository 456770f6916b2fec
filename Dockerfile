# RSIR service image: the API (default command) and, with `rsir worker`, the round worker.
#
# CPU build (torch 2.13.0 from the PyTorch CPU wheel index):
#   docker build -t rsir .
# CUDA build: a CUDA runtime base and the matching PyTorch wheel index, for example
#   docker build -t rsir:cuda \
#     --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# NOTE: the CUDA example names tags that must exist for torch 2.13.0; pick the CUDA
# version of a wheel index that publishes that torch release.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    RSIR_CHECKPOINT_DIR=/app/models \
    RSIR_DATA_DIR=/app/data \
    RSIR_UPLOAD_DIR=/app/data/uploads \
    RSIR_RUNS_DIR=/app/runs

# CUDA base images ship without Python; python:3.11-slim already has it.
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv

# torch first and on its own layer: it is the largest download and changes least often.
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY rsir_engine ./rsir_engine
COPY app ./app
RUN pip install ".[service]"

# Named volumes mounted on these folders take over this ownership when first created.
RUN useradd --create-home --uid 10001 rsir \
    && mkdir -p /app/models /app/data/uploads /app/runs \
    && chown -R rsir:rsir /app/models /app/data /app/runs
USER rsir

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["rsir", "serve", "--host", "0.0.0.0", "--port", "8000"]
