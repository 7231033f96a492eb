"""Every line a full flow writes (logs, metrics, pages) is free of secrets."""

from __future__ import annotations

import io
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import time_machine

from capsule_oauth import CapsuleClient, config, get_access_token
from local.lambda_container import Invoke
from local.stack import Stack, load_event
from tests.support.capsule_fake import CLIENT_SECRET, FakeCapsule
from tests.support.connections import seed_owned
from tests.support.hooks import delivery_event, hooks_on, subscribed, token_of
from tests.support.sign_in import callback_event, confirm_event, new_session, start
from tests.support.status_events import StatusEvents


def test_a_full_flow_never_writes_a_token_code_verifier_nonce_or_secret(
    stack: Stack,
    invoke: Invoke,
    fake_capsule: FakeCapsule,
    capsys: pytest.CaptureFixture[str],
    log_output: io.StringIO,
) -> None:
    pages: list[dict[str, Any]] = []
    with time_machine.travel(1_900_000_000, tick=False):
        started = start(invoke, fake_capsule, session=new_session(return_url="/welcome"))
        items = boto3.client("dynamodb").scan(TableName=stack.state_table)["Items"]
        verifier = next(item for item in items if "code_verifier" in item)["code_verifier"]["S"]
        back = invoke("CallbackFunction", callback_event(started))
        result = parse_qs(urlsplit(back["headers"]["Location"]).query)["capsule_result"][0]
        # The app confirms, and a retry of it answers the same: both are logged.
        for _ in range(2):
            pages.append(invoke("ConfirmConnectionFunction", confirm_event(result, "anonymous")))
        # A failed exchange logs too: make sure its error path is clean as well.
        failed = start(invoke, fake_capsule, session=new_session(return_url="/welcome"))
        fake_capsule.token_faults.append((400, {}, '{"error": "invalid_grant"}'))
        pages.append(invoke("CallbackFunction", callback_event(failed)))
    with time_machine.travel(1_900_000_000 + 604799 - 3600, tick=False):
        invoke("RefreshFunction", load_event("scheduled.json"))
        token = get_access_token("exampleco:1")
        CapsuleClient("exampleco:1").get("/parties")
        fake_capsule.revoke_all()
        fake_capsule.api_faults.append((401, {}, '{"message": "revoked"}'))
        with pytest.raises(Exception, match="connect Capsule again"):
            CapsuleClient("exampleco:1").get("/parties")

    written = capsys.readouterr()  # metrics (EMF) are printed
    logged = log_output.getvalue()
    everything = "\n".join(
        [written.out, written.err, logged, *(page.get("body", "") for page in pages)]
    )
    assert '"message":"Capsule account connected"' in logged  # the capture did capture
    assert '"connection_id":"exampleco:1"' in logged  # extra fields included
    assert '"RefreshSucceeded"' in written.out
    secrets = {
        "client secret": CLIENT_SECRET,
        "code": started.code,
        "failed code": failed.code,
        "verifier": verifier,
        "binding nonce": started.nonce,
        "capsule_result": result,
        "latest access token": token,
    }
    for call in fake_capsule.mock.calls:
        body = call.response.text if call.response is not None else ""  # type: ignore[union-attr]
        for name in ("access_token", "refresh_token"):
            if f'"{name}"' in body:
                secrets[f"{name} #{len(secrets)}"] = body.split(f'"{name}": "')[1].split('"')[0]
    assert [page["statusCode"] for page in pages] == [200, 200, 400]
    assert len(secrets) >= 9
    leaked = [name for name, value in secrets.items() if value in everything]
    assert leaked == []


@pytest.mark.usefixtures("stack")
def test_the_management_routes_and_status_events_never_show_a_token_but_one(
    invoke: Invoke,
    fake_capsule: FakeCapsule,
    status_events: StatusEvents,
    capsys: pytest.CaptureFixture[str],
    log_output: io.StringIO,
) -> None:
    settings = config.settings()
    cid, grant = seed_owned(settings, fake_capsule, "user-42", now=1_900_000_000)
    with_id = {"pathParameters": {"connection_id": cid}}
    answers: list[dict[str, Any]] = []
    with time_machine.travel(1_900_000_000 + 604799 - 60, tick=False):  # refreshed on demand
        answers.append(invoke("ConnectionsFunction", load_event("list-connections.json")))
        answers.append(invoke("ConnectionsFunction", load_event("get-connection.json") | with_id))
        proxied = load_event("capsule-proxy.json")
        proxied["pathParameters"] = {"connection_id": cid, "path": "parties"}
        proxied["rawPath"] = f"/connections/{cid}/capsule/parties"
        answers.append(invoke("CapsuleProxyFunction", proxied))  # Capsule called for the app
        issued = invoke("AccessTokenFunction", load_event("access-token.json") | with_id)
        fake_capsule.revoke_faults.extend([(503, {}, "{}")] * 2)  # 502, then forced
        answers.append(invoke("DisconnectFunction", load_event("disconnect.json") | with_id))
        answers.append(invoke("DisconnectFunction", load_event("disconnect-force.json") | with_id))
    events = status_events.published()

    written = capsys.readouterr()
    everything = "\n".join(
        [written.out, written.err, log_output.getvalue(), json.dumps(events)]
        + [json.dumps(answer) for answer in answers]
    )
    assert [e["detail-type"] for e in events] == ["Connection Created", "Connection Disconnected"]
    assert [a["statusCode"] for a in answers] == [200, 200, 200, 502, 200]
    token = json.loads(issued["body"])["access_token"]
    tokens = {grant["access_token"], grant["refresh_token"], token}
    for call in fake_capsule.mock.calls:  # the rotated refresh token too
        body = call.response.text if call.response is not None else ""  # type: ignore[union-attr]
        if '"refresh_token"' in body:
            tokens.add(body.split('"refresh_token": "')[1].split('"')[0])
    assert len(tokens) == 4
    assert [t for t in tokens if t in everything] == []
    assert [t for t in tokens if t in issued["body"]] == [token]  # the one answer with one


@pytest.mark.usefixtures("stack")
def test_the_hook_lifecycle_never_writes_a_hook_token_and_makes_no_status_event_of_its_own(
    invoke: Invoke,
    fake_capsule: FakeCapsule,
    status_events: StatusEvents,
    *,
    capsys: pytest.CaptureFixture[str],
    log_output: io.StringIO,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hooks_on(monkeypatch)
    answers: list[dict[str, Any]] = []
    seen: set[str] = set()

    def note_tokens() -> None:
        seen.update(
            urlsplit(h.target_url).path.rsplit("/", 1)[-1] for h in subscribed(fake_capsule)
        )

    for later in (0, 5):  # connect and confirm, then reconnect (a new token)
        with time_machine.travel(time.time() + later, tick=False):
            started = start(invoke, fake_capsule, session=new_session(return_url="/welcome"))
            answers.append(invoke("CallbackFunction", callback_event(started)))
            back = parse_qs(urlsplit(answers[-1]["headers"]["Location"]).query)
            confirm = confirm_event(back["capsule_result"][0], "anonymous")
            answers.append(invoke("ConfirmConnectionFunction", confirm))
        note_tokens()
    token = token_of(fake_capsule)
    body = {"event": "party/created", "payload": [{"id": 1}]}
    answers += [invoke("HookIntakeFunction", delivery_event(t, body)) for t in sorted(seen)]
    for hook in subscribed(fake_capsule):  # Capsule dropped them all: the check starts over
        fake_capsule.store.hooks.drop(hook.hook_id)
    with time_machine.travel(time.time() + 86_500, tick=False):
        answers.append(invoke("RefreshFunction", load_event("scheduled.json")))
    note_tokens()
    answers.append(invoke("DisconnectFunction", load_event("disconnect.json") | {
        "pathParameters": {"connection_id": "exampleco:1"}}))  # fmt: skip
    events = status_events.published()

    written = capsys.readouterr()
    everything = "\n".join(
        [written.out, written.err, log_output.getvalue(), json.dumps(events)]
        + [json.dumps(answer) for answer in answers]
    )
    assert len(seen) == 3
    assert token in seen
    assert "CapsuleHookDeliveries" in everything
    assert [t for t in seen if t in everything] == []
    assert [e["detail-type"] for e in events if e["detail-type"].startswith("Connection")] == [
        "Connection Created",
        "Connection Reconnected",
        "Connection Disconnected",
    ]
