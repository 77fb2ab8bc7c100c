# syntax=docker/dockerfile:1
# The adapter (`python -m adapter`): FastAPI, no torch.
#   docker build -f docker/adapter.Dockerfile -t ghcr.io/chatterbox-serve/chatterbox-adapter:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --upgrade pip
COPY docker/adapter-requirements.txt /tmp/adapter-requirements.txt
# Every package is pinned and listed, dependencies included: --no-deps installs exactly the list and
# `pip check` proves it complete.
RUN pip install --no-deps -r /tmp/adapter-requirements.txt \
 && pip check

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8081 \
    VOICES_DIR=/app/voices
RUN groupadd --gid 1000 app \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
 && mkdir -p /app/voices \
 && chown -R 1000:1000 /app/voices
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The adapter imports nothing from predictor/: what both services state lives in contract/ (no torch).
COPY contract/ /app/contract/
COPY adapter/ /app/adapter/
RUN python -m compileall -q /app/adapter /app/contract
USER 1000:1000
EXPOSE 8081
CMD ["python", "-m", "adapter"]
