"""/docs and /redoc load every asset from the service itself, under a CSP that says so."""

from __future__ import annotations

import re

import httpx


async def test_docs_pages_load_their_assets_from_the_service(client: httpx.AsyncClient) -> None:
    """Every script, style and icon the pages reference is a local path that answers 200."""
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status_code == 200
        references = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert references, page
        for url in references:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert asset.headers["x-content-type-options"] == "nosniff"
            assert "max-age" in asset.headers["cache-control"]
        assert "cdn." not in response.text


async def test_docs_page_csp_allows_this_origin_and_its_own_inline_script_only(
    client: httpx.AsyncClient,
) -> None:
    """The CSP names 'self' and one hash for Swagger UI's inline start-up, nothing remote."""
    response = await client.get("/docs")
    csp = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert csp["default-src"] == "'none'"
    sources = csp["script-src"].split()
    assert sources[0] == "'self'"
    assert len(sources) == 2
    assert sources[1].startswith("'sha256-")
    assert "http" not in response.headers["content-security-policy"]
    assert csp["frame-ancestors"] == "'none'"
