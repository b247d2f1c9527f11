"""The simulated nodes kwok manages: GPU nodes (tainted, labelled, with nvidia.com/gpu
capacity) and a CPU node. Plain dicts, applied with kubectl."""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


def build_node(
    name: str, *, cpu: str, memory: str, gpus: int = 0, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
    node_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        **(labels or {}),
    }
    spec: dict[str, Any] = {}
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
        node_labels |= {GPU_PRODUCT_LABEL: GPU_PRODUCT, "nvidia.com/gpu.count": str(gpus)}
        spec["taints"] = [GPU_TAINT]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": node_labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def build_fake_nodes(gpu_nodes: int = 2, gpus_per_node: int = 8) -> list[dict[str, Any]]:
    """`gpu_nodes` GPU nodes and one CPU node."""
    gpu = [
        build_node(f"kwok-gpu-{i}", cpu="64", memory="512Gi", gpus=gpus_per_node)
        for i in range(gpu_nodes)
    ]
    return [*gpu, build_node("kwok-cpu-0", cpu="16", memory="64Gi")]
