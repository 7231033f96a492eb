"""Each function's policy in template.yaml grants exactly the AWS calls its code makes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import time_machine
from botocore.client import BaseClient

from capsule_oauth import config
from local.lambda_container import Invoke, reset_caches
from local.stack import Stack, Template, load_event
from tests.support.capsule_fake import CLIENT_ID, EXPIRES_IN, FakeCapsule
from tests.support.connections import CID, T0, seed
from tests.support.hooks import API, deliver, hooks_on, subscribe, token_of
from tests.support.sign_in import callback_event, new_session, start, with_session

Record = Callable[[Callable[[], Any]], set[str]]


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> Record:
    """Run an action and return the IAM actions ("service:Operation") it called."""
    seen: set[str] | None = None
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def recording(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if seen is not None:
            seen.add(f"{self.meta.service_model.signing_name}:{operation}")
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)

    def run(action: Callable[[], Any]) -> set[str]:
        nonlocal seen
        seen = set()
        try:
            action()
            return seen
        finally:
            seen = None

    return run


def granted(template: Template, logical_id: str) -> set[str]:
    properties = template.of_type("AWS::Serverless::Function")[logical_id]
    actions: set[str] = set()
    for policy in properties.get("Policies", []):
        for statement in policy["Statement"]:
            listed = statement["Action"]
            actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_start_function_is_granted_exactly_what_it_calls(
    template: Template, stack: Stack, invoke: Invoke, record: Record
) -> None:
    event = with_session(load_event("start.json"), new_session())
    called = record(lambda: invoke("StartFunction", event))

    assert called == granted(template, "StartFunction")


def test_connect_sessions_function_is_granted_exactly_what_it_calls(
    template: Template, stack: Stack, fake_capsule: FakeCapsule, invoke: Invoke, record: Record
) -> None:
    seed(config.settings(), fake_capsule)  # a connection of "anonymous" to reconnect
    event = load_event("connect-session.json")
    event["body"] = json.dumps({"owner": "anonymous", "reconnect_connection_id": CID})

    called = record(lambda: invoke("ConnectSessionsFunction", event))

    assert called == granted(template, "ConnectSessionsFunction")


def test_callback_function_is_granted_exactly_what_it_calls(
    template: Template,
    stack: Stack,
    invoke: Invoke,
    fake_capsule: FakeCapsule,
    record: Record,
    *,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks_on(monkeypatch)  # connecting subscribes REST hooks too
    first, again = start(invoke, fake_capsule), start(invoke, fake_capsule)
    reset_caches()  # a fresh container: the secret read is part of the callback

    # Connecting, then connecting the same account again (its replaced grant is opened to
    # be revoked): together, every call the callback makes.
    called = record(lambda: invoke("CallbackFunction", callback_event(first)))
    called |= record(lambda: invoke("CallbackFunction", callback_event(again)))

    assert called == granted(template, "CallbackFunction")


def test_refresh_function_is_granted_exactly_what_it_calls(
    template: Template,
    stack: Stack,
    invoke: Invoke,
    fake_capsule: FakeCapsule,
    record: Record,
    *,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks_on(monkeypatch)
    seed(config.settings(), fake_capsule)
    subscribe()  # its REST hooks are due a check in the run, and one of ours is orphaned
    fake_capsule.store.hooks.create(
        "exampleco", CLIENT_ID, "party/created", f"{API}/capsule-hooks/{'x' * 43}", ""
    )
    reset_caches()  # a fresh container: the secret read is part of the run

    with time_machine.travel(T0 + EXPIRES_IN - 3600, tick=False):
        called = record(lambda: invoke("RefreshFunction", load_event("scheduled.json")))

    assert called == granted(template, "RefreshFunction")


def _path_event(name: str, connection_id: str) -> dict[str, Any]:
    event = load_event(name)
    event["pathParameters"] = {"connection_id": connection_id}
    return event


def test_connections_function_is_granted_exactly_what_it_calls(
    template: Template, stack: Stack, fake_capsule: FakeCapsule, invoke: Invoke, record: Record
) -> None:
    seed(config.settings(), fake_capsule)
    listing = load_event("list-connections.json")
    listing["queryStringParameters"] = {"owner": "anonymous"}

    called = record(lambda: invoke("ConnectionsFunction", listing))
    called |= record(lambda: invoke("ConnectionsFunction", _path_event("get-connection.json", CID)))

    assert called == granted(template, "ConnectionsFunction")


def test_access_token_function_is_granted_exactly_what_it_calls(
    template: Template, stack: Stack, fake_capsule: FakeCapsule, invoke: Invoke, record: Record
) -> None:
    seed(config.settings(), fake_capsule)
    reset_caches()
    event = _path_event("access-token.json", CID)

    # A token near expiry, refreshed on demand: every call the route can make.
    with time_machine.travel(T0 + EXPIRES_IN - 60, tick=False):
        called = record(lambda: invoke("AccessTokenFunction", event))

    assert called == granted(template, "AccessTokenFunction")


def test_disconnect_function_is_granted_exactly_what_it_calls(
    template: Template, stack: Stack, fake_capsule: FakeCapsule, invoke: Invoke, record: Record
) -> None:
    seed(config.settings(), fake_capsule)
    reset_caches()

    called = record(lambda: invoke("DisconnectFunction", _path_event("disconnect.json", CID)))

    assert called == granted(template, "DisconnectFunction")


def test_hook_intake_function_is_granted_exactly_what_it_calls(
    template: Template,
    stack: Stack,
    fake_capsule: FakeCapsule,
    invoke: Invoke,
    record: Record,
    *,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks_on(monkeypatch)
    seed(config.settings(), fake_capsule)
    subscribe()
    body = {"event": "party/created", "payload": [{"id": 1}]}

    called = record(lambda: deliver(invoke, token_of(fake_capsule), body))

    assert called == granted(template, "HookIntakeFunction")


def test_events_function_is_granted_exactly_what_it_calls(
    template: Template, stack: Stack, invoke: Invoke, record: Record
) -> None:
    # Reading the stream is Lambda's (SAM's AWSLambdaDynamoDBExecutionRole); the code puts.
    called = record(lambda: invoke("EventsFunction", load_event("connection-stream.json")))

    assert called == granted(template, "EventsFunction")
