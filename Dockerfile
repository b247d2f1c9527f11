# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target operator .   the operator: slim Python, no torch, non-root
#   docker build --target trainer .    training pods and the CPU/dev model server
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Any CUDA runtime image with Python 3.11 available; override for other CUDA versions.
ARG TRAINER_BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install '.[foundry]'
# A fixed non-root uid; the root filesystem can be mounted read-only (nothing is
# written outside /tmp).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kubetune", "run"]

FROM ${TRAINER_BASE_IMAGE} AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive HF_HUB_DISABLE_TELEMETRY=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/kubetune
ENV PATH=/opt/kubetune/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install '.[train]'
USER 65532:65532
ENTRYPOINT ["kubetune"]
