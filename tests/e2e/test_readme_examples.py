"""The README's "Connect from your app" Python example, run as written against the local stack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.support.stacks import RunningDeployment

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def example(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} .*?-->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no example {name!r}"
    return match.group(1)


def test_the_readme_creates_a_connect_session_with_boto3_credentials(
    local_deployment: RunningDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The local gateway accepts the local stack's credentials, as API Gateway accepts a
    # principal allowed to invoke the route.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    namespace: dict[str, Any] = {}
    exec(example("connect-session"), namespace)  # noqa: S102 - the README's own code

    created = namespace["create_connect_session"](local_deployment.url, "readme-user", "/")

    assert set(created) == {"connect_url", "expires_at"}
    opened = requests.get(created["connect_url"], allow_redirects=False, timeout=10)
    assert opened.status_code == 302
    assert "state" in parse_qs(urlsplit(opened.headers["Location"]).query)
