# syntax=docker/dockerfile:1
# The predictor, CUDA flavour (tag <version>-cuda; needs the NVIDIA container toolkit on the host).
#   docker build -f docker/predictor-cuda.Dockerfile -t ghcr.io/chatterbox-serve/chatterbox-predictor:0.1.0-cuda .
# torch's PyPI wheels bring their own CUDA 12.4 libraries (the nvidia-* packages in requirements.lock);
# the base image supplies the NVIDIA runtime environment. CUDA_IMAGE=nvidia/cuda:12.4.1-base-ubuntu22.04
# gives a smaller image that works the same way.
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04

FROM ${CUDA_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive
# Python 3.11 from the deadsnakes PPA (Ubuntu 22.04 ships 3.10).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove software-properties-common gnupg \
 && rm -rf /var/lib/apt/lists/*

FROM python AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3.11 -m venv /opt/venv \
 && pip install --upgrade pip "setuptools<81" wheel
COPY requirements.lock pyproject.toml scripts/extra_requirements.py /src/
# The predictor extra of pyproject.toml, pinned by the lock (torch's PyPI wheels bring CUDA), then
# chatterbox-tts without its dependencies: it pins gradio, which a server does not need.
RUN python /src/extra_requirements.py /src/pyproject.toml predictor > /tmp/predictor-requirements.txt \
 && pip install -c /src/requirements.lock -r /tmp/predictor-requirements.txt \
 && pip install --no-deps chatterbox-tts==0.1.7
COPY contract/ /src/contract/
COPY predictor/ /src/predictor/
RUN pip install --no-deps "/src[predictor]" \
 && python -m compileall -q /opt/venv/lib/python3.11/site-packages/predictor /opt/venv/lib/python3.11/site-packages/contract

FROM python
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    VOICES_DIR=/app/voices \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    TRITON_CACHE_DIR=/tmp/triton
RUN groupadd --gid 1000 app \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
 && mkdir -p /app/voices /mnt/models /cache/huggingface \
 && chown -R 1000:1000 /app/voices /mnt/models /cache
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 1000:1000
EXPOSE 8080 8081
CMD ["python", "-m", "predictor", "--model_dir", "/mnt/models", "--http_port", "8080", "--grpc_port", "8081"]
