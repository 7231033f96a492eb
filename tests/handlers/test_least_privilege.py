"""Each function's role, as CloudFormation receives it after the SAM transform, grants exactly
the AWS calls the function makes and Lambda makes for it, on the resources they use.

Every function of the template has a scenario here that makes each call it can make; a
function without one fails ``test_every_function_has_a_scenario``. Calls are recorded at
boto3 (what the code asks of AWS) and evaluated against the generated role's policies as
IAM would (tests/support/iam.py), with their resources and condition keys.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import time_machine
from botocore.client import BaseClient

from capsule_oauth import config
from capsule_oauth.store.sessions import session_key
from capsule_oauth.web import binding
from local.lambda_container import Invoke, reset_caches
from local.stack import ROOT, Stack, Template, load_event
from tests.support.capsule_fake import CLIENT_ID, EXPIRES_IN, FakeCapsule
from tests.support.connections import CID, T0, seed, seed_pending
from tests.support.hooks import API, deliver, hooks_on, subscribe, token_of
from tests.support.iam import PLATFORM_POLICIES, Call, Deployed, findings
from tests.support.sign_in import (
    callback_event,
    confirm_event,
    follow,
    new_session,
    start,
    with_session,
)


@dataclass
class Run:
    """What a scenario works with; ``record`` runs an action and keeps the calls it made."""

    stack: Stack
    invoke: Invoke
    capsule: FakeCapsule
    calls: list[Call]
    record: Callable[[Callable[[], Any]], None]
    monkeypatch: pytest.MonkeyPatch


Scenario = Callable[[Run], None]
SCENARIOS: dict[str, Scenario] = {}


def scenario(function: str) -> Callable[[Scenario], Scenario]:
    def register(run: Scenario) -> Scenario:
        SCENARIOS[function] = run
        return run

    return register


@pytest.fixture
def deployed(stack: Stack) -> Deployed:
    return Deployed(stack)


@pytest.fixture
def run(
    deployed: Deployed,
    stack: Stack,
    invoke: Invoke,
    fake_capsule: FakeCapsule,
    monkeypatch: pytest.MonkeyPatch,
) -> Run:
    calls: list[Call] = []
    recording = False
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def recorded(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if recording:
            service = self.meta.service_model.signing_name
            calls.extend(deployed.calls_of(service, operation, params))
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recorded)

    def record(action: Callable[[], Any]) -> None:
        nonlocal recording
        recording = True
        try:
            action()
        finally:
            recording = False

    return Run(stack, invoke, fake_capsule, calls, record, monkeypatch)


def _path_event(name: str, connection_id: str) -> dict[str, Any]:
    event = load_event(name)
    event["pathParameters"] = {"connection_id": connection_id}
    return event


@scenario("StartFunction")
def _start(run: Run) -> None:
    event = with_session(load_event("start.json"), new_session(return_url="/welcome"))
    run.record(lambda: run.invoke("StartFunction", event))


@scenario("ConnectSessionsFunction")
def _connect_sessions(run: Run) -> None:
    seed(config.settings(), run.capsule)  # a connection of "anonymous" to reconnect
    event = load_event("connect-session.json")
    event["body"] = json.dumps(
        {"owner": "anonymous", "return_url": "/welcome", "reconnect_connection_id": CID}
    )
    run.record(lambda: run.invoke("ConnectSessionsFunction", event))


@scenario("CallbackFunction")
def _callback(run: Run) -> None:
    hooks_on(run.monkeypatch)  # an active connection's sign-in subscribes REST hooks too
    seed(config.settings(), run.capsule)  # active: connecting it again applies at once
    first, again = (
        start(run.invoke, run.capsule, session=new_session(return_url="/welcome")) for _ in "12"
    )
    reset_caches()  # a fresh container: the secret read is part of the callback
    # Connecting (a pending connection and its result), then connecting the same account
    # again (its replaced grant is opened to be revoked): every call the callback makes.
    run.record(lambda: run.invoke("CallbackFunction", callback_event(first)))
    run.record(lambda: run.invoke("CallbackFunction", callback_event(again)))
    # A failed sign-in whose "Try again" starts a new one of the same connect session.
    failing = start(run.invoke, run.capsule, session=new_session(return_url="/welcome"))
    run.capsule.token_faults.append((503, {}, "{}"))
    failed = run.invoke("CallbackFunction", callback_event(failing))
    retry = failed["body"].split('href="')[1].split('"')[0]
    answer = {"statusCode": 303, "headers": {"Location": retry}}
    run.record(lambda: follow(run.invoke, answer, failing))


@scenario("RefreshFunction")
def _refresh(run: Run) -> None:
    hooks_on(run.monkeypatch)
    seed(config.settings(), run.capsule)
    subscribe()  # its REST hooks are due a check in the run, and one of ours is orphaned
    run.capsule.store.hooks.create(
        "exampleco", CLIENT_ID, "party/created", f"{API}/capsule-hooks/{'x' * 43}", ""
    )
    seed_pending(config.settings(), run.capsule, now=T0 - 3600)  # unconfirmed: discarded
    reset_caches()  # a fresh container: the secret read is part of the run
    with time_machine.travel(T0 + EXPIRES_IN - 3600, tick=False):
        run.record(lambda: run.invoke("RefreshFunction", load_event("scheduled.json")))


@scenario("ConfirmConnectionFunction")
def _confirm(run: Run) -> None:
    # Confirmed for another owner, the pending connection is discarded: every call it makes.
    started = start(run.invoke, run.capsule, session=new_session("user-42", "/welcome"))
    back = run.invoke("CallbackFunction", callback_event(started))["headers"]["Location"]
    result = back.split("capsule_result=")[1].split("&")[0]
    reset_caches()
    run.record(lambda: run.invoke("ConfirmConnectionFunction", confirm_event(result, "user-7")))
    # Confirmed for its owner, it becomes active and subscribes its REST hooks.
    hooks_on(run.monkeypatch)
    started = start(run.invoke, run.capsule, session=new_session("user-42", "/welcome"))
    back = run.invoke("CallbackFunction", callback_event(started))["headers"]["Location"]
    result = back.split("capsule_result=")[1].split("&")[0]
    run.record(lambda: run.invoke("ConfirmConnectionFunction", confirm_event(result, "user-42")))


@scenario("ConnectionsFunction")
def _connections(run: Run) -> None:
    seed(config.settings(), run.capsule)
    listing = load_event("list-connections.json")
    listing["queryStringParameters"] = {"owner": "anonymous"}
    run.record(lambda: run.invoke("ConnectionsFunction", listing))
    event = _path_event("get-connection.json", CID)
    run.record(lambda: run.invoke("ConnectionsFunction", event))


@scenario("AccessTokenFunction")
def _access_token(run: Run) -> None:
    seed(config.settings(), run.capsule)
    reset_caches()
    event = _path_event("access-token.json", CID)
    # A token near expiry, refreshed on demand: every call the route can make.
    with time_machine.travel(T0 + EXPIRES_IN - 60, tick=False):
        run.record(lambda: run.invoke("AccessTokenFunction", event))


@scenario("DisconnectFunction")
def _disconnect(run: Run) -> None:
    hooks_on(run.monkeypatch)
    seed(config.settings(), run.capsule)
    subscribe()  # disconnecting deletes its REST hooks first
    reset_caches()
    event = _path_event("disconnect.json", CID)
    run.record(lambda: run.invoke("DisconnectFunction", event))


@scenario("EventsFunction")
def _events(run: Run) -> None:
    # The code publishes; reading the stream and keeping failures is Lambda's, with this
    # role (platform_calls).
    event = load_event("connection-stream.json")
    run.record(lambda: run.invoke("EventsFunction", event))


@scenario("CapsuleProxyFunction")
def _capsule_proxy(run: Run) -> None:
    seed(config.settings(), run.capsule)
    reset_caches()
    event = _path_event("capsule-proxy.json", CID)
    event["pathParameters"]["path"] = "parties"
    # A token near expiry, refreshed on demand, then the call drawn from the budget.
    with time_machine.travel(T0 + EXPIRES_IN - 60, tick=False):
        run.record(lambda: run.invoke("CapsuleProxyFunction", event))


@scenario("HookIntakeFunction")
def _hook_intake(run: Run) -> None:
    hooks_on(run.monkeypatch)
    seed(config.settings(), run.capsule)
    subscribe()
    body = {"event": "party/created", "payload": [{"id": 1}]}
    run.record(lambda: deliver(run.invoke, token_of(run.capsule), body))


def test_every_function_has_a_scenario(deployed: Deployed) -> None:
    assert sorted(SCENARIOS) == deployed.functions()


@pytest.mark.parametrize("function", sorted(SCENARIOS))
def test_role_grants_exactly_what_the_function_calls(
    function: str, run: Run, deployed: Deployed
) -> None:
    SCENARIOS[function](run)

    found = findings(deployed, function, run.calls)
    assert not found, "\n".join(found)


def _state_item(deployed: Deployed, key: str) -> Call:
    return deployed.calls_of(
        "dynamodb",
        "PutItem",
        {"TableName": deployed.stack.state_table, "Item": {"state": {"S": key}}},
    )[0]


def test_the_start_function_cannot_write_a_connect_session(deployed: Deployed) -> None:
    role = deployed.role("StartFunction")
    session = _state_item(deployed, session_key(binding.random_token()))
    state = _state_item(deployed, binding.random_token())

    assert role.allows(state)
    assert not role.allows(session)
    assert not role.allows(Call("dynamodb:GetItem", state.resource, state.context))


def test_the_connect_sessions_function_can_write_only_connect_sessions(
    deployed: Deployed,
) -> None:
    role = deployed.role("ConnectSessionsFunction")
    session = _state_item(deployed, session_key(binding.random_token()))
    state = _state_item(deployed, binding.random_token())

    assert role.allows(session)
    assert not role.allows(state)
    assert not role.allows(Call("dynamodb:PutItem", state.resource))  # no key, no write


def test_the_events_function_reads_only_the_connections_stream(deployed: Deployed) -> None:
    role = deployed.role("EventsFunction")
    stream = deployed.stack.physical["ConnectionsTable.StreamArn"]
    elsewhere = f"arn:aws:dynamodb:us-east-1:123456789012:table/other/stream/{stream[-23:]}"

    assert role.allows(Call("dynamodb:GetRecords", stream))
    assert not role.allows(Call("dynamodb:GetRecords", elsewhere))
    assert role.managed == ("service-role/AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess")


def test_readme_names_the_only_grants_beyond_this_stacks_resources(deployed: Deployed) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    claim = re.search(r"- \*\*Least privilege\*\*:(.*?)\n(?:- |\n)", readme, re.DOTALL)
    assert claim, "README's Security section has no Least privilege item"
    text = " ".join(claim.group(1).split())
    assert "after the SAM transform" in text
    named = set(re.findall(r"`(AWS\w+)`", text))
    attached = {
        name.rsplit("/", 1)[-1]
        for function in deployed.functions()
        for name in deployed.role(function).managed
    }
    assert named == attached == {name.rsplit("/", 1)[-1] for name in PLATFORM_POLICIES}


def test_the_check_finds_a_grant_never_called_and_one_on_every_resource(
    template: Template, run: Run
) -> None:
    body = copy.deepcopy(template.body)
    policies = body["Resources"]["ConnectionsFunction"]["Properties"]["Policies"]
    policies[0]["Statement"] += [
        {"Sid": "Unused", "Effect": "Allow", "Action": "dynamodb:Scan", "Resource": "*"},
    ]
    widened = Deployed(Stack(Template(body), run.stack.physical, run.stack.parameters))
    _connections(run)

    found = findings(widened, "ConnectionsFunction", run.calls)

    assert found == [
        "ConnectionsFunctionRole grants dynamodb:Scan in ConnectionsFunctionRolePolicy0/Unused,"
        " never called",
        "ConnectionsFunctionRole grants dynamodb:Scan on * in"
        " ConnectionsFunctionRolePolicy0/Unused",
    ]
