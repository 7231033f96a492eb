"""What the stack tells its deployer: the start URL lives where the callback does."""

from __future__ import annotations

import json

from local.stack import Template


def test_start_url_follows_a_custom_redirect_uri(template: Template) -> None:
    start_url = template.body["Outputs"]["StartUrl"]["Value"]

    condition, custom, default = start_url["Fn::If"]
    assert condition == "HasRedirectUri"
    # On the custom domain: the host of RedirectUri (its third "/"-separated part).
    assert custom["Fn::Sub"][0] == "https://${Host}/auth/start"
    assert custom["Fn::Sub"][1]["Host"] == {
        "Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "RedirectUri"}]}]
    }
    assert "execute-api" in json.dumps(default)


def test_capsule_base_url_must_be_https_except_on_localhost(template: Template) -> None:
    pattern = template.body["Parameters"]["CapsuleBaseUrl"]["AllowedPattern"]

    assert pattern.startswith("^(https://")
    assert "localhost" in pattern
