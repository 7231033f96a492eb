"""ANY /connections/{connection_id}/capsule/{path+}: Capsule API v2 for any language.

Each method passes through with its query and JSON body, the token and nothing else of the
caller's goes to Capsule, Capsule's status, body and rate-limit / paging headers come back;
a 401 refreshes and retries once; bad paths, bodies and methods never reach Capsule; the
budget refuses with 429 before Capsule does; nothing secret or personal is logged.

Capsule (the fake) keeps the real time, so these tests do too.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
import requests

from capsule_oauth import config
from capsule_oauth.config import Settings
from capsule_oauth.store import aws
from local.lambda_container import Invoke
from local.stack import load_event
from tests.support.capsule_fake import EXPIRES_IN, FakeCapsule, Reply
from tests.support.connections import refresh_requests, seed_owned, stored_tokens

FUNCTION = "CapsuleProxyFunction"


def connected(settings: Settings, fake: FakeCapsule, *, expires_in: int = EXPIRES_IN) -> str:
    now = int(time.time())
    cid, _ = seed_owned(settings, fake, "user-42", now=now + expires_in - EXPIRES_IN)
    return cid


def proxy(
    invoke: Invoke,
    connection_id: str,
    path: str = "parties",
    *,
    method: str = "GET",
    query: str = "",
    body: str | None = None,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
) -> tuple[int, dict[str, str], Any]:
    event = load_event("capsule-proxy.json")
    event["rawPath"] = f"/connections/{connection_id}/capsule/{path}"
    event["requestContext"]["http"]["path"] = event["rawPath"]
    event["requestContext"]["http"]["method"] = method
    event["routeKey"] = event["requestContext"]["routeKey"]
    event["pathParameters"] = {"connection_id": connection_id, "path": unquote(path)}
    event["rawQueryString"] = query
    event.pop("queryStringParameters", None)
    if query:
        event["queryStringParameters"] = dict(parse_qsl(query))
    event["headers"].update(headers or {})
    if body is not None:
        event["body"] = base64.b64encode(body.encode()).decode() if base64_body else body
        event["isBase64Encoded"] = base64_body
        if content_type is not None:
            event["headers"]["content-type"] = content_type
    answer = invoke(FUNCTION, event)
    assert answer["headers"]["Cache-Control"] == "no-store"
    payload = json.loads(answer["body"]) if answer["body"] else None
    return answer["statusCode"], answer["headers"], payload


def set_status(settings: Settings, connection_id: str, status: str) -> None:
    aws.dynamodb().update_item(
        TableName=settings.connections_table,
        Key={"connection_id": {"S": connection_id}},
        UpdateExpression="SET #status = :status",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":status": {"S": status}},
    )


# --- passing through -----------------------------------------------------------------------


def test_get_passes_the_query_and_answers_capsules_body_and_headers(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)

    status, headers, body = proxy(
        invoke, cid, query="page=2&perPage=5", headers={"x-custom": "mine", "cookie": "a=b"}
    )

    assert status == 200
    assert [p["id"] for p in body["parties"]] == [1006, 1007, 1008, 1009, 1010]
    assert headers["X-Pagination-Has-More"] == "true"
    assert headers["Link"].endswith('/api/v2/parties?page=3&perPage=5>; rel="next"')
    assert headers["X-RateLimit-Limit"] == "4000"
    assert int(headers["X-RateLimit-Remaining"]) < 4000
    assert int(headers["X-RateLimit-Reset"]) > time.time()
    sent = fake_capsule.api_sent[-1]
    assert (sent.method, sent.path, sent.query) == ("GET", "/api/v2/parties", "page=2&perPage=5")
    token = stored_tokens(settings, cid).access_token
    assert fake_capsule.api_headers[-1]["Authorization"] == f"Bearer {token}"
    sent_names = {name.lower() for name in fake_capsule.api_headers[-1]}
    assert not sent_names & {"x-custom", "cookie", "x-amz-date", "host"} - {"host"}
    assert "AWS4-HMAC-SHA256" not in json.dumps(fake_capsule.api_headers[-1])


@pytest.mark.parametrize(
    "case",
    [
        ("POST", 201, '{"party": {"id": 7, "type": "person"}}'),
        ("PUT", 200, '{"party": {"id": 7, "firstName": "Ada"}}'),
        ("PATCH", 200, '{"party": {"id": 7, "lastName": "Lovelace"}}'),
        ("DELETE", 204, ""),
    ],
)
def test_each_method_passes_its_json_body_and_answers_capsules_status(
    settings: Settings,
    fake_capsule: FakeCapsule,
    invoke: Invoke,
    case: tuple[str, int, str],
) -> None:
    method, capsule_status, answer = case
    cid = connected(settings, fake_capsule)
    limits = {"X-RateLimit-Limit": "4000", "X-RateLimit-Remaining": "3990"}
    fake_capsule.api_faults.append((capsule_status, limits, answer))
    sent_body = None if method == "DELETE" else '{"party": {"firstName": "Ada"}}'

    status, headers, body = proxy(invoke, cid, "parties/7", method=method, body=sent_body)

    assert status == capsule_status
    assert body == (json.loads(answer) if answer else None)
    assert headers["X-RateLimit-Remaining"] == "3990"
    sent = fake_capsule.api_sent[-1]
    assert (sent.method, sent.path) == (method, "/api/v2/parties/7")
    if sent_body is not None:
        assert json.loads(sent.body) == json.loads(sent_body)
        assert sent.content_type == "application/json"
    else:
        assert sent.body == b""


def test_a_base64_body_is_passed_decoded(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append((201, {}, '{"party": {"id": 8}}'))

    status, _, _ = proxy(
        invoke, cid, method="POST", body='{"party": {"lastName": "Hopper"}}', base64_body=True
    )

    assert status == 201
    assert json.loads(fake_capsule.api_sent[-1].body) == {"party": {"lastName": "Hopper"}}


def test_capsules_own_errors_come_back_as_they_are(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    invalid = '{"message": "validation failed", "errors": [{"message": "is required"}]}'
    fake_capsule.api_faults.append((422, {}, invalid))

    status, _, body = proxy(invoke, cid, method="POST", body="{}")

    assert status == 422
    assert body == json.loads(invalid)


# --- tokens ----------------------------------------------------------------------------------


def test_a_token_within_the_margin_is_refreshed_before_the_call(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule, expires_in=60)

    status, _, _ = proxy(invoke, cid)

    assert status == 200
    assert len(refresh_requests(fake_capsule)) == 1
    new_token = stored_tokens(settings, cid).access_token
    assert fake_capsule.api_headers[-1]["Authorization"] == f"Bearer {new_token}"


def test_a_401_refreshes_once_and_retries_once(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append((401, {}, '{"message": "token expired"}'))

    status, _, body = proxy(invoke, cid)

    assert status == 200
    assert "parties" in body
    assert len(refresh_requests(fake_capsule)) == 1
    assert len(fake_capsule.api_requests) == 2


def test_a_401_after_the_refresh_is_a_409(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    refused: Reply = (401, {}, '{"message": "token revoked"}')
    fake_capsule.api_faults.extend([refused, refused])

    status, _, body = proxy(invoke, cid)

    assert status == 409
    assert body["error"] == "reauthorization_required"
    assert len(fake_capsule.api_requests) == 2  # one retry, never more


@pytest.mark.parametrize(
    ("stored_status", "error"),
    [
        ("needs_reauth", "reauthorization_required"),
        ("disconnected", "reauthorization_required"),
        ("pending", "confirmation_required"),
    ],
)
def test_a_connection_that_is_not_active_is_a_409_and_nothing_is_sent(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, stored_status: str, error: str
) -> None:
    cid = connected(settings, fake_capsule)
    set_status(settings, cid, stored_status)

    status, _, body = proxy(invoke, cid)

    assert (status, body["error"]) == (409, error)
    assert fake_capsule.api_requests == []


def test_an_unknown_connection_is_a_404(fake_capsule: FakeCapsule, invoke: Invoke) -> None:
    status, _, body = proxy(invoke, "cc_" + "0" * 32)

    assert (status, body["error"]) == (404, "not_found")
    assert fake_capsule.api_requests == []


# --- what never reaches Capsule --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "parties/../users/current",
        "..",
        "parties/%2e%2e/site",
        "parties%2F..%2Fsite",
        "%2F%2Fevil.example/x",
        "https:%2F%2Fevil.example",
        "https://evil.example/x",
        "parties//7",
        "parties/.",
        "a%5C..%5Cb",
        "parties%00",
        "parties/%ZZ",
    ],
)
def test_a_path_that_could_leave_api_v2_is_a_400(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, path: str
) -> None:
    cid = connected(settings, fake_capsule)

    status, _, body = proxy(invoke, cid, path)

    assert (status, body["error"]) == (400, "invalid_path")
    assert fake_capsule.api_requests == []


def test_an_encoded_character_in_a_segment_is_passed_encoded(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append((200, {}, "{}"))

    status, _, _ = proxy(invoke, cid, "parties/search%20name")

    assert status == 200
    assert fake_capsule.api_sent[-1].path == "/api/v2/parties/search%20name"


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE"])
def test_other_methods_are_a_405(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, method: str
) -> None:
    cid = connected(settings, fake_capsule)

    status, headers, body = proxy(invoke, cid, method=method)

    assert (status, body["error"]) == (405, "method_not_allowed")
    assert headers["Allow"] == "GET, POST, PUT, PATCH, DELETE"
    assert fake_capsule.api_requests == []


def test_a_body_over_1_mib_is_a_413(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    big = json.dumps({"note": "x" * (1 << 20)})

    status, _, body = proxy(invoke, cid, method="POST", body=big)

    assert (status, body["error"]) == (413, "request_too_large")
    assert fake_capsule.api_requests == []


def test_a_body_of_just_1_mib_is_sent(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append((201, {}, "{}"))
    exact = json.dumps({"note": "x" * ((1 << 20) - 12)})
    assert len(exact) == 1 << 20

    status, _, _ = proxy(invoke, cid, method="POST", body=exact)

    assert status == 201


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_by_its_content_type_is_a_415(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, content_type: str | None
) -> None:
    cid = connected(settings, fake_capsule)

    status, _, body = proxy(invoke, cid, method="POST", body="{}", content_type=content_type)

    assert (status, body["error"]) == (415, "unsupported_media_type")
    assert fake_capsule.api_requests == []


def test_a_malformed_json_body_is_a_400(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)

    status, _, body = proxy(invoke, cid, method="POST", body='{"party": ')

    assert (status, body["error"]) == (400, "invalid_json")
    assert fake_capsule.api_requests == []


# --- Capsule failing -------------------------------------------------------------------------


def test_capsule_5xx_is_a_502_with_capsules_status_and_no_retry(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append((503, {}, "<html>busy</html>"))

    status, _, body = proxy(invoke, cid)

    assert (status, body["error"]) == (502, "capsule_unavailable")
    assert "503" in body["message"]
    assert len(fake_capsule.api_requests) == 1


def test_capsule_unreachable_is_a_502(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append(requests.ConnectionError("refused"))

    status, _, body = proxy(invoke, cid)

    assert (status, body["error"]) == (502, "capsule_unavailable")


def test_capsule_timing_out_is_a_504_and_no_retry(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append(requests.ReadTimeout("slow"))

    status, _, body = proxy(invoke, cid)

    assert (status, body["error"]) == (504, "capsule_timeout")
    assert len(fake_capsule.api_requests) == 1


def test_a_body_from_capsule_that_is_not_json_is_a_502(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append((200, {}, "<html>"))

    status, _, body = proxy(invoke, cid)

    assert (status, body["error"]) == (502, "capsule_unavailable")


# --- the budget ------------------------------------------------------------------------------


def test_capsules_429_is_a_429_and_the_next_call_is_refused_without_calling_capsule(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke
) -> None:
    cid = connected(settings, fake_capsule)
    reset = int(time.time()) + 900
    fake_capsule.api_faults.append(
        (429, {"X-RateLimit-Reset": str(reset)}, '{"error": "rate limit reached"}')
    )

    first = proxy(invoke, cid)
    second = proxy(invoke, cid)

    for status, headers, body in (first, second):
        assert (status, body["error"]) == (429, "rate_limited")
        assert 890 <= int(headers["Retry-After"]) <= 900
    assert len(fake_capsule.api_requests) == 1


def test_a_spent_budget_is_a_429_without_calling_capsule(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = connected(settings, fake_capsule)
    monkeypatch.setenv("CAPSULE_HOURLY_BUDGET", "2")
    config.settings.cache_clear()

    answers = [proxy(invoke, cid)[0] for _ in range(3)]

    assert answers == [200, 200, 429]
    assert len(fake_capsule.api_requests) == 2


# --- the log ---------------------------------------------------------------------------------


def test_each_call_is_logged_without_body_query_values_or_token(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, log_output: io.StringIO
) -> None:
    cid = connected(settings, fake_capsule, expires_in=60)  # refreshed on the way
    fake_capsule.api_faults.append((401, {}, '{"message": "expired"}'))
    fake_capsule.api_faults.append((201, {}, '{"party": {"firstName": "SECRET-ANSWER"}}'))

    status, _, _ = proxy(
        invoke,
        cid,
        "parties",
        method="POST",
        query="q=SECRET-QUERY",
        body='{"party": {"firstName": "SECRET-BODY"}}',
    )

    assert status == 201
    lines = [json.loads(line) for line in log_output.getvalue().splitlines() if line]
    calls = [line for line in lines if line.get("message") == "Capsule call"]
    assert len(calls) == 1
    logged = calls[0]
    assert logged["caller"] == "arn:aws:iam::123456789012:user/app-backend"
    assert (logged["connection_id"], logged["method"], logged["path"]) == (cid, "POST", "/parties")
    assert logged["capsule_status"] == 201
    assert logged["duration_ms"] >= 0
    everything = log_output.getvalue()
    pair = stored_tokens(settings, cid)
    used = [r["refresh_token"] for r in refresh_requests(fake_capsule)]
    secrets = [pair.access_token, pair.refresh_token, *used]
    for secret in ["SECRET-ANSWER", "SECRET-QUERY", "SECRET-BODY", *secrets]:
        assert secret not in everything


def test_a_call_that_cannot_end_before_api_gateway_gives_up_is_a_504(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    from capsule_oauth.flows import proxy as proxy_flow

    cid = connected(settings, fake_capsule)
    monkeypatch.setattr(proxy_flow, "DEADLINE_SECONDS", 0.0)

    status, _, body = proxy(invoke, cid)

    assert (status, body["error"]) == (504, "capsule_timeout")
    assert fake_capsule.api_requests == []


def test_capsules_answer_reaches_the_caller_when_the_budget_cannot_be_updated(
    settings: Settings, fake_capsule: FakeCapsule, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    from capsule_oauth.capsule import budget

    cid = connected(settings, fake_capsule)
    fake_capsule.api_faults.append((201, {}, '{"party": {"id": 9}}'))

    def throttled(*_: object, **__: object) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "UpdateItem")

    monkeypatch.setattr(budget.Budget, "_observe", throttled)

    status, _, body = proxy(invoke, cid, method="POST", body="{}")

    assert (status, body) == (201, {"party": {"id": 9}})  # the write happened: say so
