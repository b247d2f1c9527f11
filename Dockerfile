# syntax=docker/dockerfile:1
# Two images from one file (see README, "Container images"):
#   docker build --target operator -t REGISTRY/kubetune-operator:0.1.0 .
#   docker build --target trainer  -t REGISTRY/kubetune-trainer:0.1.0 .
# Dependencies are pinned by constraints-*.txt (`make lock` regenerates them).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# A CUDA runtime base for the trainer; any image with Python 3.11 available works
# (override for another CUDA version: --build-arg TRAINER_BASE_IMAGE=...).
ARG TRAINER_BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

# The operator: slim Python, no torch, non-root, nothing written outside /tmp (the
# chart mounts the root filesystem read-only).
FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md constraints-operator.txt ./
COPY operator/ operator/
RUN pip install --constraint constraints-operator.txt '.[foundry]'
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kubetune", "run"]

# Training pods (`python -m kubetune.trainer`) and the CPU/dev model server
# (`python -m kubetune.serve`); the operator sets the command of each pod.
FROM ${TRAINER_BASE_IMAGE} AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive HF_HUB_DISABLE_TELEMETRY=1 HOME=/tmp
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/kubetune
ENV PATH=/opt/kubetune/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md constraints-trainer.txt ./
COPY operator/ operator/
RUN pip install --constraint constraints-trainer.txt '.[qlora]'
USER 65532:65532
ENTRYPOINT ["python", "-m"]
CMD ["kubetune.trainer", "--help"]
