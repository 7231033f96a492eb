"""Section 2: AWS API calls and Capsule HTTP calls per flow, on moto and the emulator.

Cold = a new container (every cache of the layer and of Powertools empty); warm = the same
container's next invocation.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.common import Row, median, verdict
from bench.harness import BenchStack, approve, bench_stack, start_event
from bench.instrument import Call, Recorder, aws_names, capsule_names, installed
from capsule_oauth import tokens
from capsule_oauth.flows import hooks as hook_flow
from capsule_oauth.flows import refresh as refresh_flow
from capsule_oauth.store import aws
from capsule_oauth.store.hooks import HookStore
from capsule_oauth.tokens import get_access_token
from local.capsule_emulator import DEFAULT_ACCOUNTS, Account
from local.lambda_container import LambdaFunction, reset_caches
from local.stack import load_event

SECTION = "calls per flow"

# Start reads its connect session and writes the state; the callback consumes the state
# (marks it used), counts its two identity lookups in the Capsule user's budget, claims the
# session (its first connection finishes it), seals and writes the connection, and notes on
# the used state what was connected (a reload then says so). With a return URL, one more
# write: the capsule_result's hash.
START_WARM_TARGET = ["dynamodb:GetItem", "dynamodb:PutItem"]
CALLBACK_WARM_TARGET = [
    "dynamodb:UpdateItem",
    "dynamodb:UpdateItem",
    "dynamodb:UpdateItem",
    "kms:Encrypt",
    "dynamodb:UpdateItem",
    "dynamodb:UpdateItem",
]
TOKEN_COLD_TARGET = ["dynamodb:GetItem", "kms:Decrypt"]
ACCESS_TOKEN_CALLS = 200  # warm calls timed (each reads the status and version)
HOOK_DELIVERIES = 50  # warm 1-record deliveries timed


def _shown(calls: list[Call]) -> str:
    aws_calls = aws_names(calls)
    http = capsule_names(calls)
    text = f"{len(aws_calls)} AWS" + (f" ({', '.join(aws_calls)})" if aws_calls else "")
    if http:
        text += f"; {len(http)} Capsule ({', '.join(http)})"
    return text


def _row(
    metric: str, calls: list[Call], target: list[str] | None = None, target_text: str = ""
) -> Row:
    names = aws_names(calls)
    status = ""
    if target is not None:
        status = verdict(sorted(names) == sorted(target))
        target_text = target_text or f"{len(target)} AWS"
    return Row(
        SECTION,
        metric,
        _shown(calls),
        target_text,
        status,
        value=len(names),
        unit="AWS calls",
        detail={"aws": names, "capsule": capsule_names(calls)},
    )


class Flows:
    def __init__(self, local: BenchStack, recorder: Recorder) -> None:
        self.local = local
        self.recorder = recorder
        # Each handler is imported once, before anything is counted, as a container does.
        self.functions = {
            name: LambdaFunction.of(local.template, name)
            for name in ("StartFunction", "CallbackFunction")
        }

    def invoke(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = self.functions[name].invoke(event)
        return response

    def recorded(self, action: Callable[[], object]) -> list[Call]:
        with self.recorder.recording() as calls:
            action()
        return calls

    def start(self, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Open a connect link (``event``: made beforehand, so its session is not counted)."""
        response = self.invoke("StartFunction", event or start_event())
        if response.get("statusCode") != 302:
            raise RuntimeError(f"start answered {response.get('statusCode')}")
        return response

    def approved_callback_event(self, started: dict[str, Any], account: Account) -> dict[str, Any]:
        """Approve in the emulator as ``account``: the callback event the browser then sends."""
        approval = approve(started["headers"]["Location"], account)
        cookie = started["cookies"][0].split(";")[0]  # name=nonce
        event = load_event("callback.json")
        event["queryStringParameters"] = {"code": approval.code, "state": approval.state}
        event["rawQueryString"] = f"code={approval.code}&state={approval.state}"
        event["cookies"] = [cookie]
        return event

    def run_callback(self, event: dict[str, Any]) -> dict[str, Any]:
        answer = self.invoke("CallbackFunction", event)
        if answer.get("statusCode") not in (200, 303):
            raise RuntimeError(f"callback answered {answer.get('statusCode')}")
        return answer

    def callback(self, started: dict[str, Any], account: Account) -> list[Call]:
        """Approve in the emulator (not counted), then run the callback (counted)."""
        event = self.approved_callback_event(started, account)
        return self.recorded(lambda: self.run_callback(event))

    def make_due(self, connection_id: str) -> None:
        aws.dynamodb().update_item(
            TableName=self.local.stack.connections_table,
            Key={"connection_id": {"S": connection_id}},
            UpdateExpression="SET refresh_due_at = :due",
            ExpressionAttributeValues={":due": {"N": str(int(time.time()) - 60)}},
        )

    def access_token_route(self, connection_id: str) -> list[Row]:
        """POST /connections/{id}/access-token with a fresh token: AWS calls of a new
        container's first call and of a repeat, then the handler's own time per warm call."""
        route = LambdaFunction.of(self.local.template, "AccessTokenFunction")
        event = load_event("access-token.json") | {
            "pathParameters": {"connection_id": connection_id}
        }

        def call() -> None:
            if route.invoke(event)["statusCode"] != 200:
                raise RuntimeError("the access-token route did not answer 200")

        reset_caches()
        first = self.recorded(call)
        repeat = self.recorded(call)
        rows = [
            _row("POST …/access-token (fresh token), first call", first, TOKEN_COLD_TARGET,
                 "≤ 1 GetItem + 1 Decrypt"),
            _row("POST …/access-token (fresh token), repeat", repeat, ["dynamodb:GetItem"],
                 "1 GetItem (status and version)"),
        ]  # fmt: skip
        times = []  # microseconds, one small read (the bench runs with logs at ERROR, no metrics)
        for _ in range(ACCESS_TOKEN_CALLS):
            began = time.perf_counter()
            call()
            times.append((time.perf_counter() - began) * 1e6)
        deciles = statistics.quantiles(times, n=10)
        rows.append(
            Row(
                SECTION,
                f"POST …/access-token, warm: handler's own time ({ACCESS_TOKEN_CALLS} calls)",
                f"median {median(times):.0f} µs (p10 {deciles[0]:.0f}, p90 {deciles[-1]:.0f})",
                value=round(median(times), 1),
                unit="µs",
                detail={"p10_us": round(deciles[0], 1), "p90_us": round(deciles[-1], 1)},
            )
        )
        return rows

    def hook_intake(self, connection_id: str) -> list[Row]:
        """POST /capsule-hooks/{hook_token}, warm: AWS calls per delivery of 1 and of 25
        records, then the handler's own time per 1-record delivery (moto's answers included)."""
        token, hashed = hook_flow.new_token()
        HookStore(self.local.settings).begin(
            connection_id, token_hash=hashed, events=("party/updated",), base_url=None,
            now=int(time.time()),
        )  # fmt: skip
        route = LambdaFunction.of(self.local.template, "HookIntakeFunction")

        def deliver(records: int) -> None:
            payload = [{"id": n, "updatedAt": "2026-11-28T09:00:00Z"} for n in range(records)]
            event = load_event("hook-delivery.json") | {"pathParameters": {"hook_token": token}}
            event["body"] = json.dumps({"event": "party/updated", "payload": payload})
            if route.invoke(event)["statusCode"] != 200:
                raise RuntimeError("the hook intake did not answer 200")

        deliver(1)  # the container's first delivery warms it up
        rows = []
        for records in (1, 25):
            batches = math.ceil(records / 10)
            calls = self.recorded(functools.partial(deliver, records))
            rows.append(
                _row(f"hook intake, warm, {records} record{'s' if records > 1 else ''}", calls,
                     ["dynamodb:Query"] + ["events:PutEvents"] * batches,
                     f"1 Query + {batches} PutEvents")
            )  # fmt: skip
        times = []  # the handler's own time: the whole delivery less its AWS calls
        for _ in range(HOOK_DELIVERIES):
            began = time.perf_counter()
            made = self.recorded(functools.partial(deliver, 1))
            spent = time.perf_counter() - began
            waited = sum(call.seconds for call in made if call.kind == "aws")
            times.append((spent - waited) * 1e3)
        deciles = statistics.quantiles(times, n=10)
        rows.append(
            Row(
                SECTION,
                f"hook intake, warm, 1 record: handler's own time ({HOOK_DELIVERIES} deliveries,"
                " AWS calls excluded)",
                f"median {median(times):.2f} ms (p10 {deciles[0]:.2f}, p90 {deciles[-1]:.2f})",
                value=round(median(times), 3),
                unit="ms",
                detail={"p10_ms": round(deciles[0], 3), "p90_ms": round(deciles[-1], 3)},
            )
        )
        return rows

    def refresh_run(self) -> list[Call]:
        reports: list[refresh_flow.RunReport] = []
        calls = self.recorded(
            lambda: reports.append(
                refresh_flow.refresh_due(self.local.settings, remaining_ms=lambda: 10**9)
            )
        )
        if dict(reports[0].outcomes) != {"refreshed": 1}:
            raise RuntimeError(f"refresh did not refresh one connection: {reports[0].as_dict()}")
        return calls


def run() -> list[Row]:
    recorder = Recorder()
    first, second = DEFAULT_ACCOUNTS[0], DEFAULT_ACCOUNTS[1]
    with bench_stack() as local:
        recorder.capsule_base_url = local.emulator.url
        with installed(recorder):
            flows = Flows(local, recorder)
            rows: list[Row] = []

            reset_caches()
            started: list[dict[str, Any]] = []
            links = [start_event(), start_event()]  # the app's connect sessions, not counted
            start_cold = flows.recorded(lambda: started.append(flows.start(links[0])))
            start_warm = flows.recorded(lambda: started.append(flows.start(links[1])))
            rows.append(_row("start, cold container", start_cold))
            rows.append(_row("start, warm", start_warm, START_WARM_TARGET))

            reset_caches()  # the callback runs in its own function's container
            rows.append(_row("callback, cold container", flows.callback(started[1], first)))
            rows.append(
                _row(
                    "callback, warm",
                    flows.callback(flows.start(), second),
                    CALLBACK_WARM_TARGET,
                    "6 AWS (state consume, session claim, KMS encrypt, connection write,"
                    " budget count, state completed)",
                )
            )

            connection_id = f"{first.subdomain}:{first.user_id}"
            reset_caches()
            token_cold = flows.recorded(lambda: get_access_token(connection_id))
            token_warm = flows.recorded(lambda: get_access_token(connection_id))
            rows.append(
                _row(
                    "get_access_token (fresh token), cold",
                    token_cold,
                    TOKEN_COLD_TARGET,
                    "1 read + 1 decrypt",
                )
            )
            rows.append(_row("get_access_token (fresh token), warm", token_warm, [], "0 AWS"))
            rows.extend(flows.access_token_route(connection_id))

            reset_caches()
            flows.make_due(connection_id)
            rows.append(_row("refresh run, 1 due, cold container", flows.refresh_run()))
            flows.make_due(f"{second.subdomain}:{second.user_id}")
            rows.append(_row("refresh run, 1 due, warm", flows.refresh_run()))
            rows.extend(flows.hook_intake(connection_id))
            tokens.clear_cache()
    return rows
