"""Adds the service's own answers to BentoML's OpenAPI document (GET /docs.json).

BentoML lists the same four answers (200, 400, 404, 500) for every route and has no hook to add one;
the face routes also answer 422 (a photo without a face) and, from service/guard.py, 408, 413 and
503. This ASGI middleware rewrites the JSON of /docs.json on its way out, so clients generated from
the document (and schemathesis) know them.
"""
from __future__ import annotations

import json

ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
# BentoML sends its own 4xx (the 422 included) as a one-element list: [{"error": "..."}]
BENTOML_ERROR = {"type": "array", "items": ERROR, "minItems": 1, "maxItems": 1}


def _answer(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


EXTRA = {
    "422": _answer("No face found in the photo (for /predict_batch: which photo); nothing was scored", BENTOML_ERROR),
    "408": _answer("The request body did not arrive within the read timeout", ERROR),
    "413": _answer("A photo or the request is larger than the limits", ERROR),
    "503": _answer("Busy: retry after the Retry-After header's seconds", ERROR),
}


INFO = {"title": "faces: gender and attractiveness rating from a face photo",
        "description": ("Two CNNs trained from scratch by this project's DVC pipeline (see MODEL_CARD.md: a research "
                        "demo of a sensitive task; do not use it to judge people). Each answer's `model` says which "
                        "registered versions answered and which data they learnt from."),
        "version": "0.1.0"}


def document(spec: dict, routes: dict[str, tuple[str, ...]]) -> dict:
    """Adds the answers named per route (status codes from EXTRA) and the service's title,
    description and version to an OpenAPI dict."""
    spec["info"] = {**spec.get("info", {}), **INFO}
    for path, codes in routes.items():
        post = spec.get("paths", {}).get(path, {}).get("post")
        if post is not None:
            post.setdefault("responses", {}).update({c: EXTRA[c] for c in codes})
    return spec


class DocsAnswers:
    """ASGI middleware: GET /docs.json answers BentoML's document with `document` applied."""

    def __init__(self, app, routes: dict[str, tuple[str, ...]]):
        self.app, self.routes = app, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != "/docs.json" or scope.get("method") != "GET":
            return await self.app(scope, receive, send)
        start, body = {}, []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body"):
                    await _send_patched(start, b"".join(body))

        async def _send_patched(head: dict, raw: bytes) -> None:
            if head.get("status") == 200:
                raw = json.dumps(document(json.loads(raw), self.routes)).encode()
            headers = [(k, v) for k, v in head.get("headers", []) if k.lower() != b"content-length"]
            await send({**head, "headers": [*headers, (b"content-length", str(len(raw)).encode())]})
            await send({"type": "http.response.body", "body": raw})

        await self.app(scope, receive, capture)
