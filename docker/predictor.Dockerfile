# syntax=docker/dockerfile:1
# The predictor, CPU flavour (KServe custom predictor, `python -m predictor`).
#   docker build -f docker/predictor.Dockerfile -t ghcr.io/chatterbox-serve/chatterbox-predictor:0.1.0 .
# Layers go from least to most often changed: Python packages, then the code.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --upgrade pip "setuptools<81" wheel
# CPU-only torch wheels: the PyPI ones carry ~3 GB of CUDA libraries a CPU node never loads.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY requirements.lock /tmp/requirements.lock
# requirements.lock minus the CUDA-only wheels, with torch/torchaudio at the same versions from the CPU index;
# then chatterbox-tts without its dependencies (it pins gradio, which a server does not need).
RUN grep -E '^(torch|torchaudio)==' /tmp/requirements.lock > /tmp/torch.txt \
 && pip install --no-deps --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt \
 && grep -vE '^(torch|torchaudio|triton|nvidia-[a-z0-9-]+)==' /tmp/requirements.lock > /tmp/requirements-cpu.txt \
 && pip install -r /tmp/requirements-cpu.txt \
 && pip install --no-deps chatterbox-tts==0.1.7

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    VOICES_DIR=/app/voices \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
# A non-root user (uid/gid 1000, as the chart's securityContext) owning only the writable folders.
RUN groupadd --gid 1000 app \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
 && mkdir -p /app/voices /mnt/models /cache/huggingface \
 && chown -R 1000:1000 /app/voices /mnt/models /cache
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY contract/ /app/contract/
COPY predictor/ /app/predictor/
RUN python -m compileall -q /app/predictor
USER 1000:1000
# 8080: REST (Open Inference Protocol, /metrics); 8081: gRPC.
EXPOSE 8080 8081
CMD ["python", "-m", "predictor", "--model_dir", "/mnt/models", "--http_port", "8080", "--grpc_port", "8081"]
