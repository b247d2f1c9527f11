"""Serverless endpoints, marketplace subscriptions and the endpoints' inference route.

An endpoint PUT is refused (400) for a registry model from a publisher other than
Microsoft until the project has a marketplace subscription for it; a subscription PUT is
refused for Microsoft's own models (Phi), which have no offer. An endpoint can stay
"Creating" for `AzureState.endpoint_provisioning_gets` GETs. DELETE answers 202 +
Location, or 204 when `endpoint_delete_async` is off. A model version an endpoint serves
cannot be deleted (routes.py answers 409).
"""

from __future__ import annotations

import copy
import secrets
import uuid
from typing import Any

from tests.azurefake.routes import WS, accepted
from tests.azurefake.state import AzureState, Endpoint
from tests.azurefake.wire import Call, Reply, Route, error, not_found, route

# --- serverless endpoints and marketplace subscriptions ----------------------


def _endpoint_resource(state: AzureState, ep: Endpoint) -> dict[str, Any]:
    body = copy.deepcopy(ep.body)
    props = body.setdefault("properties", {})
    props.setdefault("authMode", "Key")
    props.setdefault("contentSafety", {"contentSafetyStatus": "Enabled"})
    props["provisioningState"] = ep.provisioning_state
    props["endpointState"] = "Online" if ep.provisioning_state == "Succeeded" else "Unknown"
    props["inferenceEndpoint"] = {
        "uri": f"https://{ep.name}.models.{state.storage_suffix}",
        "headers": {},
    }
    body.update(
        id=f"{state.workspace.arm_id}/serverlessEndpoints/{ep.name}",
        name=ep.name,
        type="Microsoft.MachineLearningServices/workspaces/serverlessEndpoints",
    )
    body.setdefault("location", state.workspace.location)
    return body


def _endpoint_put(state: AzureState, call: Call) -> Reply:
    name, body = call.params["name"], call.json() or {}
    model_id = str(body.get("properties", {}).get("modelSettings", {}).get("modelId", ""))
    if not model_id:
        return error(400, "UserError", "properties.modelSettings.modelId is required.")
    if state.needs_subscription(model_id) and not state.has_subscription(model_id):
        return error(
            400,
            "UserError",
            f"Model {model_id} needs a marketplace subscription in this project first.",
        )
    ep = state.endpoints.get(name)
    status = 200 if ep else 201
    keys = ep.keys if ep else (secrets.token_hex(16), secrets.token_hex(16))
    creating = "Creating" if state.endpoint_provisioning_gets else "Succeeded"
    ep = Endpoint(name, body, creating, keys, creating_gets=state.endpoint_provisioning_gets)
    state.endpoints[name] = ep
    return Reply(status, _endpoint_resource(state, ep))


def _endpoint_get(state: AzureState, call: Call) -> Reply:
    ep = state.endpoints.get(call.params["name"])
    if ep is None:
        return not_found("ServerlessEndpoint", call.params["name"])
    ep.creating_gets -= 1
    if ep.creating_gets < 0:
        ep.provisioning_state = "Succeeded"
    return Reply(200, _endpoint_resource(state, ep))


def _endpoint_list(state: AzureState, call: Call) -> Reply:
    return Reply(200, {"value": [_endpoint_resource(state, e) for e in state.endpoints.values()]})


def _endpoint_delete(state: AzureState, call: Call) -> Reply:
    if state.endpoints.pop(call.params["name"], None) is None:
        return not_found("ServerlessEndpoint", call.params["name"])
    return accepted(state, call) if state.endpoint_delete_async else Reply(204)


def _endpoint_keys(state: AzureState, call: Call) -> Reply:
    ep = state.endpoints.get(call.params["name"])
    if ep is None:
        return not_found("ServerlessEndpoint", call.params["name"])
    return Reply(200, {"primaryKey": ep.keys[0], "secondaryKey": ep.keys[1]})


def _subscription_resource(state: AzureState, name: str) -> dict[str, Any]:
    body = copy.deepcopy(state.subscriptions[name])
    model_id = body["properties"]["modelId"]
    body["properties"].update(
        marketplacePlan={
            "publisherId": model_id.split("/")[3],
            "offerId": model_id.rsplit("/", 1)[-1].lower(),
            "planId": "fake-plan",
        },
        marketplaceSubscriptionStatus="Subscribed",
        provisioningState="Succeeded",
    )
    body.update(
        id=f"{state.workspace.arm_id}/marketplaceSubscriptions/{name}",
        name=name,
        type="Microsoft.MachineLearningServices/workspaces/marketplaceSubscriptions",
    )
    return body


def _subscription_put(state: AzureState, call: Call) -> Reply:
    body = call.json() or {}
    model_id = str(body.get("properties", {}).get("modelId", ""))
    if not state.needs_subscription(model_id):
        return error(
            400,
            "UserError",
            f"Model {model_id} is offered by Microsoft and has no marketplace offer.",
        )
    created = call.params["name"] not in state.subscriptions
    state.subscriptions[call.params["name"]] = {"properties": {"modelId": model_id}}
    return Reply(201 if created else 200, _subscription_resource(state, call.params["name"]))


def _subscription_get(state: AzureState, call: Call) -> Reply:
    if call.params["name"] not in state.subscriptions:
        return not_found("MarketplaceSubscription", call.params["name"])
    return Reply(200, _subscription_resource(state, call.params["name"]))


def _chat(state: AzureState, call: Call) -> Reply:
    ep = state.endpoints.get(call.params["endpoint"])
    if ep is None:
        return not_found("ServerlessEndpoint", call.params["endpoint"])
    key = call.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if key not in ep.keys:
        return error(401, "Unauthorized", "Access denied due to invalid subscription key.")
    return Reply(
        200,
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "model": ep.model_id,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "Hello from the fake endpoint."},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7},
        },
    )


ROUTES: tuple[Route, ...] = (
    route("endpoint.list", "GET", "arm", WS + "/serverlessEndpoints", _endpoint_list),
    route("endpoint.put", "PUT", "arm", WS + "/serverlessEndpoints/(?P<name>[^/]+)", _endpoint_put),
    route("endpoint.get", "GET", "arm", WS + "/serverlessEndpoints/(?P<name>[^/]+)", _endpoint_get),
    route(
        "endpoint.delete",
        "DELETE",
        "arm",
        WS + "/serverlessEndpoints/(?P<name>[^/]+)",
        _endpoint_delete,
    ),
    route(
        "endpoint.listKeys",
        "POST",
        "arm",
        WS + "/serverlessEndpoints/(?P<name>[^/]+)/listKeys",
        _endpoint_keys,
    ),
    route(
        "marketplace.put",
        "PUT",
        "arm",
        WS + "/marketplaceSubscriptions/(?P<name>[^/]+)",
        _subscription_put,
    ),
    route(
        "marketplace.get",
        "GET",
        "arm",
        WS + "/marketplaceSubscriptions/(?P<name>[^/]+)",
        _subscription_get,
    ),
    route("inference.chat", "POST", "inference", "/v1/chat/completions", _chat),
)
