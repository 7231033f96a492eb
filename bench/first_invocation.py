"""Section 2: each function's first invocation, end to end, in a fresh interpreter.

What a person waits for after a cold start: import the handler, then answer the first
request, against moto in its own process (bench/moto_process.py) and the Capsule emulator
over HTTP, answering at once. One round, each step in a new interpreter:

* StartFunction on events/start.json;
* (the emulator's consent pages, as a person walks them: not counted);
* CallbackFunction with that code and state: a full callback (code exchange, users/current,
  site, KMS encrypt, DynamoDB writes), not one that fails fast;
* RefreshFunction on events/scheduled.json with that connection made due (one refresh).

Interpreter start-up is not counted (it is Lambda's runtime start, not ours) and bytecode is
cached, as ``make build`` ships it compiled. A first round warms the page cache, uncounted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import boto3

from bench.common import ROOT, Row, median
from bench.harness import approve, start_event
from bench.import_sample import base_environment
from bench.moto_process import ServerStack, server_stack
from bench.paired import quartiles
from local.capsule_emulator import DEFAULT_ACCOUNTS, Account
from local.stack import load_event

SECTION = "first invocation"
FUNCTIONS = ("StartFunction", "CallbackFunction", "RefreshFunction")
WHAT = {
    "StartFunction": "start",
    "CallbackFunction": "a full callback against the emulator",
    "RefreshFunction": "a scheduled run, 1 connection due",
}

# The child: a Lambda-like context (stdlib only, defined before the clock starts), then the
# handler imported from its file and called once with the event read from stdin. Only the
# fields the bench needs leave the child.
_INVOKE = """
import json, sys, time
_event = json.loads(sys.stdin.read())
class _Context:
    function_name = sys.argv[2]
    memory_limit_in_mb = int(sys.argv[3])
    aws_request_id = "bench-first-invocation"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + sys.argv[2]
    function_version = "$LATEST"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"
    def __init__(self):
        self._deadline = time.monotonic() + int(sys.argv[4])
    def get_remaining_time_in_millis(self):
        return max(int((self._deadline - time.monotonic()) * 1000), 0)
_context = _Context()
_t0 = time.perf_counter()
import importlib.util
_spec = importlib.util.spec_from_file_location("app", sys.argv[1])
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_t1 = time.perf_counter()
_response = _module.lambda_handler(_event, _context)
_t2 = time.perf_counter()
_headers = _response.get("headers") or {}
print(json.dumps({
    "import_ms": (_t1 - _t0) * 1000,
    "request_ms": (_t2 - _t1) * 1000,
    "status": _response.get("statusCode"),
    "location": _headers.get("Location"),
    "cookies": _response.get("cookies"),
    "outcomes": _response.get("outcomes"),
}))
"""


@dataclass(frozen=True)
class Invocation:
    import_ms: float
    request_ms: float
    answer: dict[str, Any] = field(repr=False)  # carries the state and binding cookie

    @property
    def total_ms(self) -> float:
        return self.import_ms + self.request_ms


def invoke_fresh(local: ServerStack, logical_id: str, event: dict[str, Any]) -> Invocation:
    spec = local.template.function(logical_id)
    env = base_environment(local.function_environment(logical_id))
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            _INVOKE,
            str(spec.handler_path),
            logical_id,
            str(spec.memory_mb),
            str(spec.timeout),
        ],
        input=json.dumps(event),  # on stdin: the callback's event carries a code
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.splitlines()[-15:])
        raise RuntimeError(f"{logical_id} failed in a fresh interpreter:\n{tail}")
    answer: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return Invocation(float(answer["import_ms"]), float(answer["request_ms"]), answer)


def _callback_event(started: Invocation, account: Account) -> dict[str, Any]:
    approval = approve(started.answer["location"], account)
    event = load_event("callback.json")
    event["queryStringParameters"] = {"code": approval.code, "state": approval.state}
    event["rawQueryString"] = f"code={approval.code}&state={approval.state}"
    event["cookies"] = [started.answer["cookies"][0].split(";")[0]]  # name=nonce
    return event


def _make_due(local: ServerStack, connection_id: str) -> None:
    boto3.client("dynamodb").update_item(
        TableName=local.stack.connections_table,
        Key={"connection_id": {"S": connection_id}},
        UpdateExpression="SET refresh_due_at = :due",
        ExpressionAttributeValues={":due": {"N": str(int(time.time()) - 60)}},
    )


def one_round(local: ServerStack, account: Account) -> dict[str, Invocation]:
    started = invoke_fresh(local, "StartFunction", start_event())
    if started.answer["status"] != 302:
        raise RuntimeError(f"start answered {started.answer['status']}")
    called_back = invoke_fresh(local, "CallbackFunction", _callback_event(started, account))
    if called_back.answer["status"] != 303:  # to the "Connected" page
        raise RuntimeError(f"callback answered {called_back.answer['status']}")
    _make_due(local, f"{account.subdomain}:{account.user_id}")
    refreshed = invoke_fresh(local, "RefreshFunction", load_event("scheduled.json"))
    if refreshed.answer["outcomes"] != {"refreshed": 1}:
        raise RuntimeError(f"refresh did not refresh one connection: {refreshed.answer}")
    return {"StartFunction": started, "CallbackFunction": called_back, "RefreshFunction": refreshed}


def run(rounds: int) -> list[Row]:
    account = DEFAULT_ACCOUNTS[0]
    samples: dict[str, list[Invocation]] = {name: [] for name in FUNCTIONS}
    with server_stack(accounts=[account]) as local:
        one_round(local, account)  # page cache and bytecode warm; not counted
        for _ in range(rounds):
            for name, invocation in one_round(local, account).items():
                samples[name].append(invocation)
    rows = []
    for name in FUNCTIONS:
        taken = samples[name]
        imports = median([s.import_ms for s in taken])
        requests = median([s.request_ms for s in taken])
        totals = [s.total_ms for s in taken]
        q1, q3 = quartiles(totals)
        rows.append(
            Row(
                SECTION,
                f"{name}: import + first request ({WHAT[name]})",
                f"{imports:.0f} + {requests:.0f} ms = {median(totals):.0f} ms"
                f" (median of {len(taken)}; IQR {q1:.0f} to {q3:.0f} ms)",
                value=round(median(totals), 2),
                unit="ms",
                detail={
                    "import_ms": round(imports, 2),
                    "first_request_ms": round(requests, 2),
                    "total_ms": [round(t, 2) for t in totals],
                    "iqr_ms": [round(q1, 2), round(q3, 2)],
                },
            )
        )
    return rows
