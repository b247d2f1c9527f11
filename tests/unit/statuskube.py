"""The two calls StatusWriter makes (handlers/status.py), against one object kept in
memory: a read, and a status merge patch that is refused (409) when it names a
resourceVersion the object is no longer at."""

from __future__ import annotations

from typing import Any

from kubetune.k8s import ApiError


class OneObjectKube:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.calls: list[tuple[str, Any]] = []
        """("get", name) and ("patch", status) in the order they came."""

    async def get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", name))
        return {**self.obj, "status": dict(self.obj["status"])}

    async def patch_custom_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str = "",
    ) -> dict[str, Any]:
        self.calls.append(("patch", status))
        meta = self.obj["metadata"]
        if resource_version and resource_version != meta["resourceVersion"]:
            raise ApiError(409, "Conflict", "", {})
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.obj["status"].update(status)
        return {**self.obj, "status": dict(self.obj["status"])}
