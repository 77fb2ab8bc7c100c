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
COPY requirements.lock pyproject.toml scripts/extra_requirements.py /src/
# torch/torchaudio at the lock's versions from the CPU index; then the predictor extra of pyproject.toml,
# pinned by the lock (the CPU torch already satisfies its torch pins); then chatterbox-tts without its
# dependencies (it pins gradio, which a server does not need).
RUN grep -E '^(torch|torchaudio)==' /src/requirements.lock > /tmp/torch.txt \
 && pip install --no-deps --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt \
 && python /src/extra_requirements.py /src/pyproject.toml predictor > /tmp/predictor-requirements.txt \
 && pip install -c /src/requirements.lock -r /tmp/predictor-requirements.txt \
 && pip install --no-deps chatterbox-tts==0.1.7
COPY contract/ /src/contract/
COPY predictor/ /src/predictor/
RUN pip install --no-deps "/src[predictor]" \
 && python -m compileall -q /opt/venv/lib/python3.11/site-packages/predictor /opt/venv/lib/python3.11/site-packages/contract

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
USER 1000:1000
# 8080: REST (Open Inference Protocol, /metrics); 8081: gRPC.
EXPOSE 8080 8081
CMD ["python", "-m", "predictor", "--model_dir", "/mnt/models", "--http_port", "8080", "--grpc_port", "8081"]
