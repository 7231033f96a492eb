"""The local gateway answers only this machine, and its forms only its own landing page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local import sigv4
from local.gateway import Gateway, LocalControl
from local.stack import Route

CREDENTIALS = sigv4.KnownCredentials("AKIALOCAL", "local-secret")


class Control(LocalControl):
    """A stack that records what it was asked to do."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def connections(self) -> list[dict[str, Any]]:
        return []

    def refresh_now(self, connection_id: str | None) -> dict[str, Any]:
        self.done.append(f"refresh {connection_id or 'due'}")
        return {"outcome": "refreshed"}

    def disconnect(self, connection_id: str) -> dict[str, Any]:
        self.done.append(f"disconnect {connection_id}")
        return {"status": "disconnected"}

    def connect_session(self, owner: str, *, return_here: bool = True) -> dict[str, Any]:
        self.done.append(f"connect {owner}" + (" back here" if return_here else ""))
        return {"connect_url": "http://localhost/auth/start?session=x"}

    def pump_status_events(self) -> list[dict[str, Any]]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"capsule_base_url": "http://c", "aws_endpoint": "http://a", "schedule_seconds": 60}


@pytest.fixture
def control() -> Control:
    return Control()


@pytest.fixture
def gateway(control: Control) -> Iterator[Gateway]:
    invoked: list[str] = []

    def invoke(function: str, event: dict[str, Any]) -> Any:
        invoked.append(function)
        return {"statusCode": 200, "body": "ran"}

    routes = [Route("GET", "/auth/start", "StartFunction")]
    running = Gateway(routes, invoke, control, credentials=CREDENTIALS, port=0).start()
    try:
        yield running
    finally:
        running.stop()


def url(gateway: Gateway, path: str) -> str:
    return f"http://127.0.0.1:{gateway.port}{path}"


@pytest.mark.parametrize("host", ["localhost", "localhost:3000", "127.0.0.1:3000", "[::1]:3000"])
def test_this_machine_s_names_are_served(gateway: Gateway, host: str) -> None:
    for path in ("/", "/auth/start", "/_local/connections"):
        answer = requests.get(url(gateway, path), headers={"Host": host}, timeout=5)
        assert answer.status_code == 200, (path, answer.text)


@pytest.mark.parametrize(
    "host", ["attacker.example", "localhost.attacker.example", "127.0.0.1.nip.io", "10.0.0.1"]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/auth/start"), ("GET", "/_local/stack"), ("POST", "/_local/refresh")],
)
def test_any_other_host_is_refused_on_every_route(
    gateway: Gateway, control: Control, host: str, method: str, path: str
) -> None:
    answer = requests.request(
        method,
        url(gateway, path),
        headers={"Host": host, "X-CSRF-Token": gateway.csrf_token},
        timeout=5,
    )

    assert answer.status_code == 403
    assert "answers only Host localhost" in answer.json()["message"]
    assert control.done == []


def test_the_landing_page_s_forms_carry_the_process_s_csrf_token(gateway: Gateway) -> None:
    page = requests.get(url(gateway, "/"), timeout=5).text
    forms = re.findall(r"<form method=post[^>]*>(<input type=hidden[^>]*>)?", page)

    assert forms
    assert all(f'name=csrf_token value="{gateway.csrf_token}"' in field for field in forms)


@pytest.mark.parametrize(
    "path", ["/_local/refresh", "/_local/disconnect?connection_id=acme:7", "/_local/connect"]
)
@pytest.mark.parametrize("token", [None, "", "wrong"])
def test_a_post_without_the_token_does_nothing(
    gateway: Gateway, control: Control, path: str, token: str | None
) -> None:
    form = {"owner": "someone"} | ({"csrf_token": token} if token is not None else {})

    answer = requests.post(url(gateway, path), data=form, allow_redirects=False, timeout=5)

    assert answer.status_code == 403
    assert "csrf_token" in answer.json()["message"]
    assert control.done == []


def test_a_post_with_the_token_is_served(gateway: Gateway, control: Control) -> None:
    by_form = requests.post(
        url(gateway, "/_local/connect"),
        data={"owner": "someone", "csrf_token": gateway.csrf_token},
        allow_redirects=False,
        timeout=5,
    )
    by_header = requests.post(
        url(gateway, "/_local/refresh"), headers={"X-CSRF-Token": gateway.csrf_token}, timeout=5
    )

    assert by_form.status_code == 303
    assert by_header.status_code == 200
    assert control.done == ["connect someone back here", "refresh due"]


def test_each_process_has_its_own_token(control: Control) -> None:
    tokens = set()
    for _ in range(2):
        running = Gateway([], lambda *_: None, control, credentials=CREDENTIALS, port=0)
        tokens.add(running.start().csrf_token)
        running.stop()

    assert len(tokens) == 2
