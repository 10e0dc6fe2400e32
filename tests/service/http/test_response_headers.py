"""HEAD wherever GET is served, no Host-built redirects, and the headers every answer carries."""

from __future__ import annotations

import httpx


async def _token(client: httpx.AsyncClient) -> str:
    body = {"email": "head@example.com", "password": "correct horse battery", "display_name": "H"}
    assert (await client.post("/register", json=body)).status_code == 201
    login = await client.post("/login", json={k: body[k] for k in ("email", "password")})
    token: str = login.json()["access_token"]
    return token


async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient) -> None:
    """HEAD gets the GET's status and headers and no body, where it used to get 405."""
    token = await _token(client)
    auth = {"Authorization": f"Bearer {token}"}
    for path, headers in (("/healthz", {}), ("/users/me", auth), ("/openapi.json", {})):
        get = await client.get(path, headers=headers)
        head = await client.head(path, headers=headers)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-length"] == get.headers["content-length"]
        assert head.headers["content-type"] == get.headers["content-type"]
    # Where GET is not served, HEAD is not either, and Allow says what is.
    refused = await client.head("/login")
    assert refused.status_code == 405
    assert "HEAD" not in refused.headers["allow"]


async def test_trailing_slash_never_redirects_to_the_host_header(
    client: httpx.AsyncClient,
) -> None:
    """A trailing slash is 404, not a redirect to whatever host the client named."""
    response = await client.get("/users/me/", headers={"Host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


async def test_every_answer_is_nosniff_and_personal_data_is_not_stored(
    client: httpx.AsyncClient,
) -> None:
    """nosniff everywhere; tokens and personal data come with Cache-Control: no-store."""
    token = await _token(client)
    login = await client.post(
        "/login", json={"email": "head@example.com", "password": "correct horse battery"}
    )
    me = await client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
    errors = [
        await client.get("/no/such/path"),
        await client.post("/register", content=b"{"),
        await client.get("/users/me"),
    ]
    for response in (login, me, *errors):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in response.headers["content-security-policy"]
