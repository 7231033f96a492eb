"""openapi.yaml: valid OpenAPI 3, the same AWS_IAM routes as template.yaml, and the answers
the handlers give match its schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from capsule_oauth.config import Settings
from local.lambda_container import Invoke
from local.stack import Template, load_event
from tests.support.capsule_fake import FakeCapsule
from tests.support.connections import seed_owned

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


def matches(spec: dict[str, Any], schema_name: str, instance: object) -> None:
    """Raise unless ``instance`` fits components/schemas/<schema_name>."""
    root = {**spec, "$ref": f"#/components/schemas/{schema_name}"}
    OAS30Validator(root).validate(instance)


def test_openapi_yaml_is_valid_openapi_3(spec: dict[str, Any]) -> None:
    validate(spec)


def test_it_describes_exactly_the_aws_iam_routes_of_the_template(
    spec: dict[str, Any], template: Template
) -> None:
    described = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    }
    any_method = ("GET", "POST", "PUT", "PATCH", "DELETE")  # what an ANY route serves
    iam_routes = {
        (method, r.path)
        for r in template.routes()
        if r.authorizer == "AWS_IAM"
        for method in (any_method if r.method == "ANY" else (r.method,))
    }
    capsules = ("POST", "/capsule-hooks/{hook_token}")  # Capsule calls it; it cannot sign

    assert described == iam_routes | {capsules}
    assert spec["paths"]["/capsule-hooks/{hook_token}"]["post"]["security"] == []
    public = {(r.method, r.path) for r in template.routes() if r.authorizer is None}
    assert public == {("GET", "/auth/start"), ("GET", "/auth/callback"), capsules}


def test_a_connection_and_a_token_as_answered_fit_their_schemas(
    spec: dict[str, Any], settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid, _ = seed_owned(settings, fake_capsule, "user-42")
    listing = load_event("list-connections.json")
    one = load_event("get-connection.json") | {"pathParameters": {"connection_id": cid}}
    token = load_event("access-token.json") | {"pathParameters": {"connection_id": cid}}

    listed = json.loads(invoke("ConnectionsFunction", listing)["body"])
    got = json.loads(invoke("ConnectionsFunction", one)["body"])
    issued = json.loads(invoke("AccessTokenFunction", token)["body"])

    for connection in [*listed["connections"], got]:
        matches(spec, "Connection", connection)
    assert listed["connections"] == [got]
    token_schema = spec["paths"]["/connections/{connection_id}/access-token"]["post"]
    schema = token_schema["responses"]["200"]["content"]["application/json"]["schema"]
    OAS30Validator({**spec, **schema}).validate(issued)
    with pytest.raises(Exception, match="is not one of"):
        matches(spec, "Connection", got | {"status": "gone"})
