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
# The adapter extra of pyproject.toml (no torch), pinned by requirements.lock: installed before the code
# is copied, so this layer changes only with those two files.
COPY requirements.lock pyproject.toml scripts/extra_requirements.py /src/
RUN python /src/extra_requirements.py /src/pyproject.toml adapter > /tmp/adapter-requirements.txt \
 && pip install -c /src/requirements.lock -r /tmp/adapter-requirements.txt \
 && pip check
COPY contract/ /src/contract/
COPY adapter/ /src/adapter/
RUN pip install --no-deps "/src[adapter]" \
 && python -m compileall -q /opt/venv/lib

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
# The adapter and contract packages are installed in the venv; the adapter imports nothing from predictor/.
WORKDIR /app
USER 1000:1000
EXPOSE 8081
CMD ["python", "-m", "adapter"]
