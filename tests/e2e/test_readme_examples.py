"""The README's examples for the app (connect, operate), run as written against the local stack."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.e2e.test_local_stack import connect
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


def shell_example(name: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} .*?-->\n```sh\n(.*?)```", text, re.S)
    assert match, f"README has no example {name!r}"
    return [command for command in match.group(1).split("\n\n") if command.strip()]


@pytest.fixture
def local_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # The local gateway accepts the local stack's credentials, as API Gateway accepts a
    # principal allowed to invoke the route.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def connected(stack: RunningDeployment, owner: str) -> str:
    """A connection of ``owner``, made through the landing page and the emulator."""
    with requests.Session() as http:
        page = connect(stack, http, owner=owner, subdomain="acme", username="ada")
    return parse_qs(urlsplit(page.headers["Location"]).query)["capsule_connection_id"][0]


@pytest.mark.usefixtures("local_credentials")
def test_the_readme_operates_a_connection_from_python(local_deployment: RunningDeployment) -> None:
    connection_id = connected(local_deployment, "readme-ops")
    readme: dict[str, Any] = {}
    exec(example("management"), readme)  # noqa: S102 - the README's own code
    api = local_deployment.url

    listed = readme["list_connections"](api, "readme-ops")
    one = readme["get_connection"](api, connection_id)
    token = readme["get_access_token"](api, connection_id)
    gone = readme["disconnect"](api, connection_id)

    assert [c["connection_id"] for c in listed] == [connection_id]
    assert one["status"] == "active"
    assert token["token_type"] == "Bearer"
    assert gone is None  # 204: revoked and forgotten
    assert readme["get_connection"](api, connection_id)["status"] == "disconnected"
    with pytest.raises(requests.HTTPError, match="409"):
        readme["get_access_token"](api, connection_id)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.usefixtures("local_credentials")
def test_the_readme_operates_a_connection_with_curl(local_deployment: RunningDeployment) -> None:
    connection_id = connected(local_deployment, "user-42")
    env = {**os.environ, "API": local_deployment.url, "CONNECTION_ID": connection_id}

    bash = shutil.which("bash") or "/bin/bash"
    answers = [
        subprocess.run(
            [bash, "-c", command],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        for command in shell_example("management-curl")
    ]

    assert [a.returncode for a in answers] == [0, 0, 0, 0], [a.stdout for a in answers]
    listed, one, token, gone = (a.stdout for a in answers)
    assert connection_id in [c["connection_id"] for c in json.loads(listed)["connections"]]
    assert json.loads(one)["connection_id"] == connection_id
    assert json.loads(token)["token_type"] == "Bearer"
    assert gone == ""  # 204


def pending_sign_in(stack: RunningDeployment, owner: str) -> str:
    """A new connection of ``owner``, not confirmed yet: the return URL's query string."""
    with requests.Session() as http:
        page = connect(stack, http, owner=owner, subdomain="acme", username="ada", confirm=False)
    return urlsplit(page.headers["Location"]).query


@pytest.mark.usefixtures("local_credentials")
def test_the_readme_return_handler_confirms_for_its_user_and_refuses_another(
    local_deployment: RunningDeployment,
) -> None:
    readme: dict[str, Any] = {}
    exec(example("confirm"), readme)  # noqa: S102 - the README's own code
    mine = pending_sign_in(local_deployment, "readme-confirm")
    forwarded = pending_sign_in(local_deployment, "readme-forwarder")

    said = readme["on_return"](local_deployment.url, mine, "readme-confirm")
    refused = readme["on_return"](local_deployment.url, forwarded, "readme-victim")

    assert said == "Connected to Acme Ltd as Ada Lovelace"
    assert refused == "That sign-in was started by someone else; nothing was connected."
    result = parse_qs(mine)["capsule_result"][0]
    assert readme["confirm_connection"](local_deployment.url, result, "readme-confirm")[0] == 200


@pytest.mark.usefixtures("local_credentials")
def test_the_readme_confirms_with_curl(local_deployment: RunningDeployment) -> None:
    query = parse_qs(pending_sign_in(local_deployment, "readme-curl"))
    env = {
        **os.environ,
        "API": local_deployment.url,
        "CAPSULE_RESULT": query["capsule_result"][0],
        "OWNER": "readme-curl",
    }
    (command,) = shell_example("confirm-curl")

    answer = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert answer.returncode == 0, answer.stdout
    confirmed = json.loads(answer.stdout)
    assert confirmed["connection_id"] == query["capsule_connection_id"][0]
    assert confirmed["status"] == "active"


@pytest.mark.usefixtures("local_credentials")
def test_the_readme_calls_capsule_through_the_proxy_and_pages_parties(
    local_deployment: RunningDeployment,
) -> None:
    connection_id = connected(local_deployment, "readme-proxy")
    readme: dict[str, Any] = {}
    exec(example("capsule-proxy"), readme)  # noqa: S102 - the README's own code
    api = local_deployment.url

    parties = readme["all_parties"](api, connection_id)
    page = readme["call_capsule"](
        api, connection_id, "GET", "parties", params={"page": 1, "perPage": 5}
    )

    assert len(parties) == 12  # the emulator's parties, every page
    assert len({p["id"] for p in parties}) == 12
    assert page.status_code == 200
    assert page.headers["X-Pagination-Has-More"] == "true"
    assert 'rel="next"' in page.headers["Link"]
    assert int(page.headers["X-RateLimit-Remaining"]) < int(page.headers["X-RateLimit-Limit"])
    assert page.headers["Cache-Control"] == "no-store"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.usefixtures("local_credentials")
def test_the_readme_calls_capsule_through_the_proxy_with_curl(
    local_deployment: RunningDeployment,
) -> None:
    connection_id = connected(local_deployment, "readme-proxy-curl")
    env = {**os.environ, "API": local_deployment.url, "CONNECTION_ID": connection_id}

    bash = shutil.which("bash") or "/bin/bash"
    answers = [
        subprocess.run(
            [bash, "-c", command], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        for command in shell_example("capsule-proxy-curl")
    ]

    assert [a.returncode for a in answers] == [0, 0], [a.stdout for a in answers]
    page, me = (json.loads(a.stdout) for a in answers)
    ids = [p["id"] for p in page["parties"]]
    assert [i % 1000 for i in ids] == [6, 7, 8, 9, 10]  # the second page of five
    assert me["user"]["username"] == "ada"
