"""The OpenAPI document tells the truth: every answer declared, every declaration real.

The central test drives every operation into each answer it declares and checks each
response against the document: its status is declared for that operation, its declared
headers are present, and its body matches the declared schema. Two linters check the
document itself: openapi-spec-validator and Redocly's recommended rules.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from loopwise.service.app import create_app
from loopwise.service.settings import load_settings
from tests.node import CLIENTS, install, run, tool
from tests.service.accounts import conftest as accounts
from tests.service.accounts.conftest import Account, MakeAccount

# Module-scoped fixtures (a server, generated code): one xdist worker runs the module.
pytestmark = pytest.mark.xdist_group("openapi")

make_account = accounts.make_account  # the accounts tests' fixture, shared by name

# Answers no scenario here drives, each with where it is proven instead.
UNDRIVEN: dict[tuple[str, str] | str, str] = {
    "408": "a body slower than the timeout: tests/service/http/test_bodies.py",
    "500": "a crash: tests/service/http/test_health.py::test_unexpected_error_is_a_bare_500",
    "503": "saturation or a lost database: tests/service/http/test_admission.py",
    ("PATCH /users/me", "409"): "two password changes racing",
    # The account lifecycle's answers need a token read out of a received email.
    ("POST /verify-email", "204"): "tests/service/accounts/test_verification.py",
    ("POST /verify-email", "403"): "tests/service/accounts/test_verification.py",
    (
        "POST /verify-email",
        "422",
    ): "validation: test_schemathesis.py, tests/service/accounts/test_verification.py",
    ("POST /verify-email/resend", "202"): "tests/service/accounts/test_verification.py",
    ("POST /verify-email/resend", "409"): "tests/service/accounts/test_verification.py",
    ("POST /verify-email/resend", "429"): "tests/service/accounts/test_verification.py",
    ("POST /users/me/orders", "403"): "tests/service/accounts/test_verification.py",
    ("POST /password-reset", "202"): "tests/service/accounts/test_password_reset.py",
    (
        "POST /password-reset",
        "422",
    ): "validation: test_schemathesis.py, tests/service/accounts/test_password_reset.py",
    ("POST /password-reset", "429"): "tests/service/accounts/test_password_reset.py",
    ("POST /password-reset/confirm", "204"): "tests/service/accounts/test_password_reset.py",
    ("POST /password-reset/confirm", "403"): "tests/service/accounts/test_password_reset.py",
    (
        "POST /password-reset/confirm",
        "422",
    ): "validation: test_schemathesis.py, tests/service/accounts/test_password_reset.py",
    ("DELETE /users/me", "204"): "tests/service/accounts/test_deletion.py",
    ("DELETE /users/me", "403"): "tests/service/accounts/test_deletion.py",
    (
        "DELETE /users/me",
        "422",
    ): "validation: test_schemathesis.py, tests/service/accounts/test_deletion.py",
    (
        "DELETE /users/me",
        "429",
    ): "the login throttle it shares: tests/service/accounts/test_throttle.py",
}


@dataclass
class Call:
    """One request of a scenario and the status it must get."""

    operation: str  # "PATCH /users/me": method and path template, as in the document
    status: int
    path: str | None = None  # the concrete path, when the template has parameters
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    params: dict[str, str | int] | None = None


def _spec() -> dict[str, Any]:
    settings = load_settings(database_url="postgresql://unused@127.0.0.1/unused", _env_file=None)
    return create_app(settings).openapi()


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return _spec()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def _check(spec: dict[str, Any], call: Call, response: httpx.Response) -> None:
    """The response is declared for the operation, with its headers and its schema."""
    method, template = call.operation.split(" ", 1)
    declared = spec["paths"][template][method.lower()]["responses"]
    status = str(response.status_code)
    assert status in declared, f"{call.operation} answered {status}, undeclared: {response.text}"
    answer = declared[status]
    for name, header in answer.get("headers", {}).items():
        definition = spec["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        if definition.get("required"):
            assert name.lower() in response.headers, f"{call.operation} {status}: no {name}"
    content = answer.get("content")
    if content is None:
        assert response.content == b"", f"{call.operation} {status} has a body"
        return
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in content, f"{call.operation} {status}: {media_type} undeclared"
    schema = {"components": spec["components"], **content[media_type]["schema"]}
    Draft202012Validator(schema).validate(response.json())


async def _scenarios(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> tuple[list[Call], Account]:
    alice = await make_account("alice@example.com")
    order = await client.post(
        "/users/me/orders",
        headers=alice.headers,
        json={"items": [{"sku": "TEA-01", "quantity": 1, "unit_price_cents": 450}]},
    )
    order_id = order.json()["id"]
    me = (await client.get("/users/me", headers=alice.headers)).headers["etag"]
    prefs = (await client.get("/users/me/preferences", headers=alice.headers)).headers["etag"]
    auth = alice.headers
    new_user = {
        "email": "new@example.com",
        "password": "correct horse battery",
        "display_name": "N",
    }
    wrong_login = {"email": "locked@example.com", "password": "wrong password"}
    wrong_current = {"password": "another fine phrase", "current_password": "not it at all"}
    item = {"sku": "CUP-L", "quantity": 1, "unit_price_cents": 1299}
    calls = [
        Call("POST /register", 201, json=new_user),
        Call("POST /register", 409, json=new_user),
        Call("POST /register", 422, json={**new_user, "password": "abababab"}),
        Call("POST /login", 200, json={"email": alice.email, "password": alice.password}),
        *[Call("POST /login", 401, json=wrong_login) for _ in range(5)],
        Call("POST /login", 429, json=wrong_login),
        Call("POST /login", 422, json={"email": "not an email", "password": "x"}),
        Call("GET /users/me", 200, headers=auth),
        Call("GET /users/me", 304, headers={**auth, "If-None-Match": me}),
        Call("GET /users/{user_id}", 200, f"/users/{alice.id}", auth),
        Call("GET /users/{user_id}", 404, f"/users/{alice.id + 1}", auth),
        Call("GET /users/{user_id}", 422, "/users/0", auth),
        Call("PATCH /users/me", 200, headers={**auth, "If-Match": me}, json={"display_name": "A"}),
        Call("PATCH /users/me", 412, headers={**auth, "If-Match": me}, json={"display_name": "B"}),
        Call("PATCH /users/me", 422, headers=auth, json={"password": "aaaaaaaa"}),
        *[Call("PATCH /users/me", 403, headers=auth, json=wrong_current) for _ in range(5)],
        Call("PATCH /users/me", 429, headers=auth, json=wrong_current),
        Call("POST /users/me/orders", 201, headers=auth, json={"items": [item]}),
        Call("POST /users/me/orders", 422, headers=auth, json={"items": []}),
        Call("GET /users/me/orders", 200, headers=auth),
        Call("GET /users/me/orders", 400, headers=auth, params={"cursor": "bogus"}),
        Call("GET /users/me/orders", 422, headers=auth, params={"limit": 0}),
        Call("GET /users/me/orders/{order_id}", 200, f"/users/me/orders/{order_id}", auth),
        Call("GET /users/me/orders/{order_id}", 404, f"/users/me/orders/{order_id + 9}", auth),
        Call("GET /users/me/orders/{order_id}", 422, "/users/me/orders/0", auth),
        Call("GET /users/me/preferences", 200, headers=auth),
        Call("GET /users/me/preferences", 304, headers={**auth, "If-None-Match": prefs}),
        Call("PUT /users/me/preferences", 428, headers=auth, json={"theme": "dark"}),
        Call("PUT /users/me/preferences", 200, headers={**auth, "If-Match": prefs}, json={}),
        Call("PUT /users/me/preferences", 412, headers={**auth, "If-Match": prefs}, json={}),
        Call("PUT /users/me/preferences", 422, headers=auth, json={"theme": "neon"}),
        Call("GET /users/me/overview", 200, headers=auth),
        Call("GET /healthz", 200),
        Call("GET /readyz", 200),
        Call("POST /logout", 204, headers=auth),
    ]
    return calls, alice


def _generic_calls(spec: dict[str, Any], path_of: dict[str, str]) -> list[Call]:
    """What every operation answers whatever its route: 400, 413, and 401 if it needs a token."""
    calls = []
    for operation, declared in _operations(spec):
        path = path_of.get(operation)
        calls.append(Call(operation, 400, path, {"Content-Length": "x"}))
        calls.append(Call(operation, 413, path, {"Content-Length": str(10**9)}))
        if declared.get("security"):
            calls.append(Call(operation, 401, path))
    return calls


async def test_every_answer_is_declared_and_every_declaration_is_given(
    client: httpx.AsyncClient, make_account: MakeAccount
) -> None:
    """Each operation is driven into each status it declares; each response is declared,
    carries the declared headers and matches the declared schema."""
    spec = (await client.get("/openapi.json")).json()
    calls, _ = await _scenarios(client, make_account)
    path_of = {call.operation: call.path for call in calls if call.path is not None}
    given: set[tuple[str, str]] = set()
    for call in [*calls, *_generic_calls(spec, path_of)]:
        method, template = call.operation.split(" ", 1)
        response = await client.request(
            method,
            call.path or template,
            headers=call.headers,
            json=call.json,
            params=call.params,
        )
        assert response.status_code == call.status, (call, response.text)
        _check(spec, call, response)
        given.add((call.operation, str(call.status)))
    missing = [
        f"{operation} {status}"
        for operation, declared in _operations(spec)
        for status in declared["responses"]
        if (operation, status) not in given
        and status not in UNDRIVEN
        and (operation, status) not in UNDRIVEN
    ]
    assert not missing, f"declared but never driven (add a Call): {missing}"


def test_openapi_spec_validator_finds_no_error(spec: dict[str, Any]) -> None:
    """The document is valid OpenAPI 3.1 (openapi-spec-validator)."""
    validate(dict(spec.items()))  # its stubs want Mapping[Hashable, Any]


def test_redocly_recommended_rules_pass(spec: dict[str, Any], tmp_path: Path) -> None:
    """Redocly CLI's recommended rules report no error and no warning."""
    install(CLIENTS)
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(spec))
    done = run([tool(CLIENTS, "redocly"), "lint", str(document), "--format=json"], cwd=tmp_path)
    report = json.loads(done.stdout)
    assert report["totals"] == {"errors": 0, "warnings": 0, "ignored": 0}, report["problems"]


def test_public_operations_say_so(spec: dict[str, Any]) -> None:
    """Every operation states its security: the bearer token, or none (`security: []`)."""
    public = {op for op, declared in _operations(spec) if declared["security"] == []}
    assert public == {
        "POST /register",
        "POST /login",
        "GET /healthz",
        "GET /readyz",
        "POST /verify-email",
        "POST /password-reset",
        "POST /password-reset/confirm",
    }
    assert spec["servers"]
    assert spec["info"]["license"]["identifier"] == "MIT"


def test_private_operations_name_the_bearer_scheme(spec: dict[str, Any]) -> None:
    """The rest require the bearer token, described as FastAPI's HTTPBearer describes it."""
    for name, operation in _operations(spec):
        assert operation["security"] in ([], [{"BearerAuth": []}]), name
    assert spec["components"]["securitySchemes"] == {
        "BearerAuth": {
            "type": "http",
            "description": "The token `POST /login` returned.",
            "scheme": "bearer",
        }
    }


def test_problem_schema_matches_the_wire(spec: dict[str, Any]) -> None:
    """Keys the server may omit are optional and never null; no default anywhere."""
    problem = spec["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status"]
    assert problem["properties"]["detail"] == {
        "type": "string",
        "description": problem["properties"]["detail"]["description"],
    }
    assert '"default"' not in json.dumps(problem)
    assert "null" not in json.dumps(problem["properties"]["errors"])


def _response_schemas(spec: dict[str, Any]) -> set[str]:
    """Names of the component schemas reachable from any response."""
    schemas = spec["components"]["schemas"]
    todo = [
        json.dumps(answer.get("content", {}))
        for _, declared in _operations(spec)
        for answer in declared["responses"].values()
    ]
    seen: set[str] = set()
    while todo:
        text = todo.pop()
        for name in schemas:
            if f'"#/components/schemas/{name}"' in text and name not in seen:
                seen.add(name)
                todo.append(json.dumps(schemas[name]))
    return seen


def test_responses_are_open_and_complete(spec: dict[str, Any]) -> None:
    """Response schemas allow keys added later, and require every key that is always sent."""
    schemas = spec["components"]["schemas"]
    responses = _response_schemas(spec)
    assert {"Preferences", "OrderItem", "User", "Overview", "Problem"} <= responses
    for name in responses:
        assert schemas[name].get("additionalProperties", True) is not False, name
    for name in ("Preferences", "Token"):
        assert set(schemas[name]["required"]) == set(schemas[name]["properties"]), name


def test_partial_preferences_document_is_valid_input(spec: dict[str, Any]) -> None:
    """The PUT body requires no key and carries no default (a TypeScript client may send
    `{"theme": "dark"}`), yet still refuses unknown keys."""
    update = spec["components"]["schemas"]["PreferencesUpdate"]
    assert "required" not in update
    assert '"default"' not in json.dumps(update)
    assert update["additionalProperties"] is False
    assert 'Absent: `"UTC"`' in update["properties"]["timezone"]["description"]


def test_password_rules_are_documented(spec: dict[str, Any]) -> None:
    """The rules the schema cannot express are in the field's description."""
    password = spec["components"]["schemas"]["Registration"]["properties"]["password"]
    assert "3 different characters" in password["description"]
