"""GET /openapi.json: generated from the schemas, and covering every route the app registers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp.test_utils import TestClient

from service import errors
from service.wire import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MEANINGS,
    CLOSE_TOO_SLOW,
    CLOSE_TRY_AGAIN,
)

from .conftest import ClientFactory, app_of

Client = TestClient[Any, Any]


async def document(client: Client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    result: dict[str, Any] = await response.json()
    return result


async def test_every_route_is_documented(client: Client) -> None:
    paths = (await document(client))["paths"]
    registered = set()
    for route in app_of(client).router.routes():
        if route.method == "HEAD":  # added by aiohttp next to every GET
            continue
        path = route.resource.canonical if route.resource is not None else None
        assert path is not None
        registered.add((path, route.method.lower()))
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    assert registered - documented == set()
    assert documented - registered == set()


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


async def test_every_reference_resolves(client: Client) -> None:
    doc = await document(client)
    assert doc["openapi"].startswith("3.")
    for ref in refs(doc):
        section, kind, name = ref.removeprefix("#/").split("/")
        assert name in doc[section][kind], ref


async def test_request_bodies_come_from_the_validation_schemas(make_client: ClientFactory) -> None:
    doc = await document(await make_client(ALERT_TEXT_MAX_LENGTH="77"))
    schemas = doc["components"]["schemas"]
    assert set(schemas["ObjectCreate"]["required"]) == {"email", "phone_number"}
    alert = schemas["AlertCreate"]
    assert alert["required"] == ["text"]
    assert alert["properties"]["text"]["maxLength"] == 77
    assert alert["properties"]["alert_all"]["type"] == "boolean"
    assert alert["properties"]["object_ids"]["items"]["type"] == "integer"
    assert alert["additionalProperties"] is False
    create = doc["paths"]["/alert"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AlertCreate"
    }


async def test_errors_have_the_standard_shape(client: Client) -> None:
    doc = await document(client)
    error = doc["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"error", "message", "fields"}
    assert set(error["required"]) == {"error", "message"}
    responses = doc["paths"]["/object"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(responses)
    for name in ("ValidationFailed", "NotFound", "DatabaseUnavailable"):
        content = doc["components"]["responses"][name]["content"]
        assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


async def test_the_websocket_is_described(client: Client) -> None:
    inbox = (await document(client))["paths"]["/inbox/{object_id}"]["get"]
    for code in (CLOSE_TOO_SLOW, CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN, CLOSE_INTERNAL_ERROR):
        assert f"| {code} | {CLOSE_MEANINGS[code]} |" in inbox["description"]
    assert "AlertFrame" in inbox["description"]
    assert "101" in inbox["responses"]
    assert [p["name"] for p in inbox["parameters"]] == ["object_id", "after", "Last-Event-ID"]
    assert "text/event-stream" in inbox["responses"]["200"]["content"]


async def test_security_follows_what_each_route_needs(make_client: ClientFactory) -> None:
    """The document declares the credential each route really asks for under the running
    settings, and the walk over every route (test_access_walk) proves the server agrees."""
    secret = "openapi-secret-0123456789abcdef0123"
    doc = await document(await make_client(API_KEYS="k", INBOX_SECRET=secret))
    assert set(doc["components"]["securitySchemes"]) == {
        "apiKey",
        "inboxToken",
        "inboxTokenQuery",
    }
    assert doc["components"]["securitySchemes"]["inboxTokenQuery"]["name"] == "token"
    paths = doc["paths"]
    anyone: list[Any] = []
    key = [{"apiKey": []}]
    key_or_token = [{"apiKey": []}, {"inboxToken": []}, {"inboxTokenQuery": []}]
    expected = {
        ("/object", "post"): key,
        ("/alert", "post"): key,
        ("/metrics", "get"): key,
        ("/object/{object_id}", "get"): key_or_token,
        ("/inbox/{object_id}", "get"): key_or_token,
        ("/alert/{alert_id}", "get"): key_or_token,
        ("/healthz", "get"): anyone,
        ("/readyz", "get"): anyone,
        ("/openapi.json", "get"): anyone,
        ("/", "get"): anyone,
        ("/static/{filename}", "get"): anyone,
    }
    for (path, method), security in expected.items():
        operation = paths[path][method]
        assert operation["security"] == security, (path, method)
        assert ("401" in operation["responses"]) == bool(security), (path, method)
    for path, operations in paths.items():  # routes added later get a security entry too
        for method, operation in operations.items():
            assert "security" in operation, (path, method)
    # Tokens only: writes are open; with nothing set, everything is.
    doc = await document(await make_client(INBOX_SECRET=secret))
    assert doc["paths"]["/object"]["post"]["security"] == []
    assert doc["paths"]["/object/{object_id}"]["get"]["security"] == key_or_token[1:]
    doc = await document(await make_client())
    assert all(op["security"] == [] for ops in doc["paths"].values() for op in ops.values())


async def test_every_error_code_is_documented_from_its_class(client: Client) -> None:
    """The reusable responses are the error classes themselves: a new class is documented."""
    responses = (await document(client))["components"]["responses"]
    for cls in errors.documented():
        assert responses[cls.__name__]["description"] == f"{cls.code}: {cls.meaning}"
    assert {"Forbidden", "TooManySockets", "IdempotencyKeyReused"} <= set(responses)
