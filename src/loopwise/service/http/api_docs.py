"""``/docs`` and ``/redoc`` served with their assets from this service, under a strict CSP.

FastAPI's default pages load Swagger UI and ReDoc from a CDN: offline, or behind an egress
filter, they render blank, and every visit lets a third party run script on the service's
origin. The assets here come from the ``fastapi-offline`` wheel (pinned in the lock, so a
deploy serves exactly what was tested) and are served from ``/docs/assets``; each page
gets a ``Content-Security-Policy`` that allows scripts from this origin only, plus the
page's own inline start-up script by its SHA-256 hash (CSP Level 3, section 8.3).

    install_api_docs(app)   # /docs, /docs/oauth2-redirect, /redoc, /docs/assets/{name}
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from loopwise.patterns import BlockingPool

__all__ = ["ASSETS_PATH", "content_security_policy", "install_api_docs"]

ASSETS_PATH = "/docs/assets"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(html: str, *, workers: bool = False) -> str:
    """The CSP for one page: this origin's assets, and the page's inline scripts by hash.

    Styles allow ``'unsafe-inline'``: both UIs set ``style`` attributes at run time, which
    a hash cannot allow, and a style cannot run script.
    """
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    directives = [
        "default-src 'none'",
        f"script-src 'self' {hashes}".rstrip(),
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    if workers:  # ReDoc parses the schema in a Web Worker it builds from a blob: URL
        directives.append("worker-src 'self' blob:")
    return "; ".join(directives)


def _page(response: HTMLResponse, *, workers: bool = False) -> tuple[bytes, dict[str, str]]:
    html = bytes(response.body).decode()
    csp = content_security_policy(html, workers=workers)
    # The pages never change while the process runs; browsers may keep them briefly.
    return bytes(response.body), {
        "content-security-policy": csp,
        "cache-control": "public, max-age=300",
    }


# The wheel's files, by the name the pages use, and their types.
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}


def _read_assets() -> dict[str, bytes]:
    """The assets' bytes (about 2.5 MB in all), read once per process: blocking, off the loop."""
    static = files("fastapi_offline") / "static"
    return {name: (static / name).read_bytes() for name in _ASSETS}


def install_api_docs(app: FastAPI) -> None:
    """Add the docs pages and their assets to ``app`` (built with ``docs_url=None``)."""
    loaded: dict[str, bytes] = {}
    openapi_url = app.openapi_url or "/openapi.json"
    swagger_body, swagger_headers = _page(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )
    )
    redirect_body, redirect_headers = _page(get_swagger_ui_oauth2_redirect_html())
    redoc_body, redoc_headers = _page(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        ),
        workers=True,
    )

    def page(body: bytes, headers: dict[str, str]) -> Response:
        return HTMLResponse(body, headers=headers)

    async def docs(request: Request) -> Response:
        return page(swagger_body, swagger_headers)

    async def oauth2_redirect(request: Request) -> Response:
        return page(redirect_body, redirect_headers)

    async def redoc(request: Request) -> Response:
        return page(redoc_body, redoc_headers)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            return Response(status_code=404)
        if not loaded:
            # The first request reads every asset on the blocking pool; later ones are
            # served from memory, with no file system call on the loop (StaticFiles makes
            # os.stat calls and reads the mime.types table on it).
            blocking: BlockingPool = request.state.blocking
            loaded.update(await blocking.run(_read_assets))
        # They change only with a new release of the wheel: cacheable for a day.
        return Response(
            loaded[name],
            media_type=_ASSETS[name],
            headers={"cache-control": "public, max-age=86400"},
        )

    app.add_route("/docs", docs, include_in_schema=False)
    app.add_route("/docs/oauth2-redirect", oauth2_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    app.add_route(f"{ASSETS_PATH}/{{name}}", asset, include_in_schema=False)
