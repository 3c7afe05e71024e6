"""service/openapi.py: the service's own answers and title in BentoML's OpenAPI document."""
import asyncio
import json

from service.openapi import EXTRA, DocsAnswers, document


def _spec() -> dict:
    return {"info": {"title": "BentoML"}, "paths": {"/predict": {"post": {"responses": {"200": {}}}},
                                                    "/livez": {"get": {}}}}


def test_named_answers_are_added_to_their_routes_only():
    spec = document(_spec(), {"/predict": ("422", "413"), "/missing": ("503",)})
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert set(responses) == {"200", "422", "413"} and responses["422"] == EXTRA["422"]
    assert "/missing" not in spec["paths"] and spec["info"]["title"].startswith("faces:")


def _call(app, path: str, method: str = "GET") -> tuple[dict, bytes]:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(app({"type": "http", "path": path, "method": method}, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


async def _bentoml(scope, receive, send):
    body = json.dumps(_spec()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def test_the_middleware_rewrites_docs_json_with_a_matching_length_and_passes_the_rest():
    app = DocsAnswers(_bentoml, {"/predict": ("503",)})
    start, body = _call(app, "/docs.json")
    doc = json.loads(body)
    assert "503" in doc["paths"]["/predict"]["post"]["responses"]
    assert dict(start["headers"])[b"content-length"] == str(len(body)).encode()
    _, other = _call(app, "/other")
    assert json.loads(other) == _spec()                      # any other path: BentoML's bytes untouched
