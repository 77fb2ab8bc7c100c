# syntax=docker/dockerfile:1
# The predictor, CPU flavour (KServe custom predictor, `python -m predictor`).
#   docker build -f docker/predictor.Dockerfile -t ghcr.io/chatterbox-serve/chatterbox-predictor:0.1.0 .
# `make images` builds it (with Docker, or with buildah where there is no Docker engine; docs/container-images.md).
# Layers go from least to most often changed: Python packages, then the code.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# CPU-only torch wheels: PyPI's carry ~3 GB of CUDA libraries a CPU node never loads.
# TORCH_INDEX_URL=https://pypi.org/simple installs PyPI's wheels instead (those of the CUDA image, with which
# this image then shares its package layer); `make images` does so by default (docs/container-images.md).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# ---- From here to the line "end of the shared part", this file and predictor-cuda.Dockerfile are the
# same text: with the same build arguments, building one flavour builds the other's layers (a cache hit).
FROM ${PYTHON_IMAGE} AS packages
ARG TORCH_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir --upgrade pip "setuptools<81" wheel
COPY requirements.lock pyproject.toml scripts/extra_requirements.py /src/
# torch/torchaudio at the lock's versions from TORCH_INDEX_URL; then the predictor extra of pyproject.toml,
# pinned by the lock (the torch just installed satisfies its torch pins; PyPI's brings the lock's nvidia-*
# packages along); then chatterbox-tts without its dependencies (it pins gradio, which a server does not
# need). pip's cache is a cache mount, outside the layers: a changed lock downloads only what changed.
RUN --mount=type=cache,target=/root/.cache/pip \
    grep -E '^(torch|torchaudio)==' /src/requirements.lock > /tmp/torch.txt \
 && pip install --no-deps --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt \
 && python /src/extra_requirements.py /src/pyproject.toml predictor > /tmp/predictor-requirements.txt \
 && pip install -c /src/requirements.lock -r /tmp/predictor-requirements.txt \
 && pip install --no-deps chatterbox-tts==0.1.7 \
 && rm -rf /src /tmp/*.txt

# The code, in a stage of its own: installed into /opt/app, which the image then copies into the venv.
FROM packages AS code
COPY contract/ /src/contract/
COPY predictor/ /src/predictor/
COPY pyproject.toml /src/
RUN pip install --no-cache-dir --no-deps --target /opt/app "/src[predictor]"

# The image is the packages stage itself (the venv, several GB, is never copied: a change to the code
# leaves its layers as they are), then the non-root user (uid/gid 1000, as the chart's securityContext)
# owning only the writable folders, then the code.
FROM packages
RUN groupadd --gid 1000 app \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
 && mkdir -p /app/voices /mnt/models /cache/huggingface \
 && chown -R 1000:1000 /app/voices /mnt/models /cache
COPY --from=code /opt/app/ /opt/venv/lib/python3.11/site-packages/
# ---- end of the shared part
# PATH (the venv first) comes from the packages stage.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    VOICES_DIR=/app/voices \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /app
USER 1000:1000
# 8080: REST (Open Inference Protocol, /metrics); 8081: gRPC.
EXPOSE 8080 8081
CMD ["python", "-m", "predictor", "--model_dir", "/mnt/models", "--http_port", "8080", "--grpc_port", "8081"]
