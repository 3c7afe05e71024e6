"""The service's two HTML pages, `/` (the demo page) and `/docs` (Swagger UI for /docs.json), each with
a Content-Security-Policy of its own; mounted by service/service.py with `@bentoml.asgi_app`."""
from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route


@cache
def page(name: str, inline_style_attrs: bool = False) -> tuple[str, str]:
    """A static page and its Content-Security-Policy: only this origin, and the page's own inline
    <script>/<style> blocks by hash (an injected script has none). Swagger UI sets style attributes
    from its bundle, so /docs also allows inline styles (not scripts)."""
    html = (Path(__file__).parent / "static" / name).read_text()

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() + "'"
                        for b in blocks)
    style = "'unsafe-inline'" if inline_style_attrs else hashes("style")
    csp = (f"default-src 'self'; script-src 'self' {hashes('script')}; style-src 'self' {style}; "
           "img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
    return html, csp


def html_answer(name: str, inline_style_attrs: bool = False) -> HTMLResponse:
    """The page with its own CSP (frontdoor.Outer adds X-Frame-Options and Referrer-Policy)."""
    html, csp = page(name, inline_style_attrs)
    return HTMLResponse(html, headers={"content-security-policy": csp})


async def index(_request) -> HTMLResponse:
    return html_answer("index.html")


async def docs(_request) -> HTMLResponse:
    """Swagger UI for /docs.json (BentoML's own page lived at /, where the demo page is now)."""
    return html_answer("docs.html", inline_style_attrs=True)


PAGES = Starlette(routes=[Route("/", index), Route("/docs", docs)])
