"""The whole stack on one machine: moto server, the Capsule emulator, the gateway, the schedule.

Resources come from template.yaml (local/stack.py); handlers run in this process
(local/lambda_container.py) with their template environment, against moto over HTTP.
Real Capsule instead of the emulator: set CAPSULE_BASE_URL, CAPSULE_CLIENT_ID and
CAPSULE_CLIENT_SECRET.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local import sigv4
from local.capsule_emulator import CapsuleEmulator
from local.capsule_emulator.store import DEFAULT_RATE_LIMIT
from local.gateway import Gateway, LocalControl
from local.lambda_container import LambdaContext, LambdaFunction, mount_layers, running
from local.parameters import InvalidParameter
from local.stack import ACCOUNT, REGION, ROOT, Stack, Template, create_stack, load_event
from local.stack import schedule_seconds as parse_schedule
from local.streams import BusQueue, StreamPump

# Where a running make local describes itself for make invoke (LOCAL_STATE_FILE: elsewhere).
STATE_FILE = Path(os.environ.get("LOCAL_STATE_FILE") or ROOT / ".local" / "stack.json")
EMULATOR_CLIENT_ID = "local-client-id"
EMULATOR_CLIENT_SECRET = "local-client-secret"
# make local hears of people created and changed in the emulator (README).
LOCAL_HOOK_EVENTS = "party/created,party/updated"

_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


# The AWS_IAM routes of the local gateway accept requests signed with the stack's own
# (fake) credentials, as API Gateway accepts those of an IAM principal allowed to invoke.
LOCAL_CALLER = sigv4.KnownCredentials(
    _AWS_ENV["AWS_ACCESS_KEY_ID"], _AWS_ENV["AWS_SECRET_ACCESS_KEY"], ACCOUNT
)


def signed_request(
    method: str, url: str, caller: sigv4.KnownCredentials, body: dict[str, Any] | None = None
) -> requests.Response:
    """Call an AWS_IAM route, signed as botocore signs for execute-api."""
    data = json.dumps(body) if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    credentials = Credentials(caller.access_key, caller.secret_key)
    SigV4Auth(credentials, "execute-api", REGION).add_auth(request)
    return requests.request(
        method, url, data=request.body, headers=dict(request.headers), timeout=30
    )


def signed_post(url: str, body: dict[str, Any], caller: sigv4.KnownCredentials) -> dict[str, Any]:
    """POST JSON to an AWS_IAM route, signed as botocore signs for execute-api."""
    result: dict[str, Any] = signed_request("POST", url, caller, body).json()
    return result


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


@dataclass
class Ports:
    gateway: int = 3000
    aws: int = 5055
    capsule: int = 8901

    @classmethod
    def any_free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


class PortBusy(RuntimeError):
    pass


@dataclass
class LocalDeployment(LocalControl):
    """Start with ``start()``; ``url`` is what a person opens; ``stop()`` ends everything."""

    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    public_host: str = "localhost"
    access_token_lifetime: int = 604799
    rate_limit: int = DEFAULT_RATE_LIMIT  # the emulator's API calls per user per hour
    hook_retry_scale: float = 1.0  # the emulator's REST hook retry waits, scaled
    schedule: bool = True
    write_state_file: bool = True
    quiet: bool = False  # no JSON log lines or metrics on stdout (for the demo's narrative)
    # template.yaml's parameters as --parameter-overrides set them (local/parameters.py)
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    template: Template = field(default_factory=Template.load)
    emulator: CapsuleEmulator | None = None
    stack: Stack | None = None
    _moto: Any = None
    _atomic: contextlib.ExitStack[bool | None] = field(default_factory=contextlib.ExitStack)
    _gateway: Gateway | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _invoke_lock: threading.Lock = field(default_factory=threading.Lock)
    _schedule_seconds: int = 1800
    _pump: StreamPump | None = None
    _status_queue: BusQueue | None = None
    _events: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=20)
    )

    @property
    def url(self) -> str:
        return f"http://{self.public_host}:{self.ports.gateway}"

    @property
    def aws_endpoint(self) -> str:
        return f"http://{self.host}:{self.ports.aws}"

    @property
    def capsule_base_url(self) -> str:
        if self.emulator is not None:
            return self.emulator.url
        if "CapsuleBaseUrl" in self.parameter_overrides:
            return self.parameter_overrides["CapsuleBaseUrl"].rstrip("/")
        return os.environ["CAPSULE_BASE_URL"].rstrip("/")

    def _real_capsule(self) -> bool:
        """Real Capsule when its client credentials are given, else the emulator."""
        return bool(
            os.environ.get("CAPSULE_CLIENT_ID")
            and os.environ.get("CAPSULE_CLIENT_SECRET")
            and (os.environ.get("CAPSULE_BASE_URL") or "CapsuleBaseUrl" in self.parameter_overrides)
        )

    def check_parameters(self) -> None:
        """Refuse, before anything starts, overrides this machine cannot run as given."""
        if "CapsuleBaseUrl" in self.parameter_overrides and not self._real_capsule():
            raise InvalidParameter(
                "CapsuleBaseUrl points the stack at another Capsule: set CAPSULE_CLIENT_ID and"
                " CAPSULE_CLIENT_SECRET too (without it, the Capsule emulator runs)"
            )
        for expression in self.template.schedules(self.parameter_overrides).values():
            try:
                parse_schedule(expression)
            except ValueError as error:
                raise InvalidParameter(f"RefreshSchedule: {error}") from None

    def start(self) -> LocalDeployment:
        self.check_parameters()
        for name, port in vars(self.ports).items():
            if port and port_in_use(self.host, port):
                raise PortBusy(
                    f"port {port} ({name}) is in use: stop what uses it, or pick other ports"
                    " (make local LOCAL_ARGS='--port 3001')"
                )
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from moto.server import ThreadedMotoServer

        from local.stack import atomic_dynamodb

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log: URLs carry codes
        for spec in self.template.functions():
            mount_layers(spec)
        # DynamoDB applies each request atomically; moto, serving threads, does not unless
        # told: two callers could both pass one conditional write (the refresh lease).
        self._atomic.enter_context(atomic_dynamodb())
        self._moto = ThreadedMotoServer(ip_address=self.host, port=self.ports.aws, verbose=False)
        self._moto.start()
        os.environ.update(_AWS_ENV)
        os.environ["AWS_ENDPOINT_URL"] = self.aws_endpoint

        if self._real_capsule():
            credentials = {
                "client_id": os.environ["CAPSULE_CLIENT_ID"],
                "client_secret": os.environ["CAPSULE_CLIENT_SECRET"],
            }
        else:
            self.emulator = CapsuleEmulator(
                client_id=EMULATOR_CLIENT_ID,
                client_secret=EMULATOR_CLIENT_SECRET,
                host=self.host,
                port=self.ports.capsule,
                access_token_lifetime=self.access_token_lifetime,
                rate_limit=self.rate_limit,
                hook_retry_scale=self.hook_retry_scale,
            ).start()
            credentials = {"client_id": EMULATOR_CLIENT_ID, "client_secret": EMULATOR_CLIENT_SECRET}

        session = boto3.Session(region_name=REGION)
        self.stack = create_stack(
            self.template,
            client_credentials=credentials,
            parameters={
                # Real Capsule cannot reach this machine: hooks by default only with the
                # emulator; --parameter-overrides CapsuleHookEvents=... sets them either way.
                "CapsuleHookEvents": LOCAL_HOOK_EVENTS if self.emulator is not None else "",
                **self.parameter_overrides,
                "CapsuleBaseUrl": self.capsule_base_url,
            },
            prefix="local",
            session=session,
        )
        # Every function gets its template environment; the Globals make them identical here.
        for spec in self.template.functions():
            os.environ.update(self.stack.environment(spec.logical_id))
        if self.quiet:
            os.environ.update(POWERTOOLS_LOG_LEVEL="ERROR", POWERTOOLS_METRICS_DISABLED="true")
        # The gateway serves plain http and says so in X-Forwarded-Proto: trust it here only.
        os.environ["CAPSULE_CONNECTOR_LOCAL_GATEWAY"] = "true"

        self._start_status_events()
        self._gateway = Gateway(
            self.template.routes(),
            self.invoke,
            self,
            credentials=LOCAL_CALLER,
            host=self.host,
            port=self.ports.gateway,
            access_log=None if self.quiet else _print_line,
        ).start()
        self.ports.gateway = self._gateway.port
        schedules = self.template.schedules(self.parameter_overrides)
        if "RefreshFunction" in schedules:
            self._schedule_seconds = parse_schedule(schedules["RefreshFunction"])
        if self.schedule:
            threading.Thread(target=self._scheduler, name="schedule", daemon=True).start()
        if self.write_state_file:
            STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
            STATE_FILE.write_text(json.dumps(self.describe(), indent=2), encoding="utf-8")

    def _start_status_events(self) -> None:
        """The ConnectionsTable stream into EventsFunction as Lambda would, and the bus into
        a local queue (as an app's EventBridge rule would), both every half second."""
        stack = self.created
        environment = stack.environment("EventsFunction")
        mapping = next(
            properties
            for properties in self.template.of_type("AWS::Lambda::EventSourceMapping").values()
            if properties["FunctionName"] == {"Ref": "EventsFunction"}
        )
        if environment["EVENT_BUS_NAME"] != "default":  # EventBusName names the app's own bus
            with contextlib.suppress(Exception):
                boto3.client("events", region_name=REGION).create_event_bus(
                    Name=environment["EVENT_BUS_NAME"]
                )
        self._status_queue = BusQueue.create(
            bus=environment["EVENT_BUS_NAME"],
            source=environment["EVENT_SOURCE"],
            name="local-status-events",
        )
        self._pump = StreamPump(
            stack.physical["ConnectionsTable.StreamArn"],
            lambda event: self.invoke("EventsFunction", event),
            batch_size=int(mapping.get("BatchSize", 100)),
            maximum_retry_attempts=int(mapping.get("MaximumRetryAttempts", 20)),
            on_failure_queue_url=stack.physical["StatusEventFailuresQueue"],
        )
        threading.Thread(target=self._pump_status_events, name="stream", daemon=True).start()

    def _pump_status_events(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                self.pump_status_events()

    def pump_status_events(self) -> list[dict[str, Any]]:
        """Deliver the stream now; the events that reached the local queue, newest first."""
        if self._pump is None or self._status_queue is None:
            return []
        self._pump.pump()
        self._events.extendleft(self._status_queue.drain())
        return list(self._events)

    def status_events(self) -> list[dict[str, Any]]:
        return list(self._events)

    def stop(self) -> None:
        self._stop.set()
        if self._gateway is not None:
            self._gateway.stop()
        if self.emulator is not None:
            self.emulator.stop()
        if self._moto is not None:
            with contextlib.suppress(Exception):
                self._moto.stop()
        self._atomic.close()
        if self.write_state_file:
            STATE_FILE.unlink(missing_ok=True)

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        return LambdaFunction.of(self.template, logical_id).invoke(event)

    def _scheduler(self) -> None:
        while not self._stop.wait(self._schedule_seconds):
            with contextlib.suppress(Exception):
                self.refresh_now(None)

    # --- LocalControl: the landing page and /_local/* -----------------------------------

    @property
    def created(self) -> Stack:
        if self.stack is None:
            raise RuntimeError("the local stack is not started")
        return self.stack

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "aws_endpoint": self.aws_endpoint,
            "capsule_base_url": self.capsule_base_url,
            "emulator": self.emulator is not None,
            "schedule_seconds": self._schedule_seconds,
            "physical": self.created.physical,
            "parameters": dict(self.parameter_overrides),
        }

    def connections(self) -> list[dict[str, Any]]:
        from capsule_oauth.store.connections import Connection

        dynamodb = boto3.client("dynamodb", region_name=REGION)
        items = [
            Connection.from_item(item)
            for page in dynamodb.get_paginator("scan").paginate(
                TableName=self.created.connections_table
            )
            for item in page["Items"]
        ]
        return [
            {
                "connection_id": c.connection_id,
                "site_name": c.site_name,
                "user_name": c.user_name,
                "status": c.status,
                "expires_at": c.expires_at,
                "refresh_due_at": c.refresh_due_at,
                "last_refreshed_at": c.last_refreshed_at,
                "failure_count": c.failure_count,
                "last_error": c.last_error,
                "version": c.version,
                "owner": c.owner,
                "hooks": c.hook_status,
            }
            for c in sorted(items, key=lambda c: c.connection_id)
        ]

    def refresh_now(self, connection_id: str | None) -> dict[str, Any]:
        """Run the scheduled refresh (RefreshFunction), or force one connection's refresh."""
        if connection_id is None:
            event = load_event("scheduled.json")
            with self._invoke_lock:
                result: dict[str, Any] = self.invoke("RefreshFunction", event)
            return result
        from capsule_oauth import config
        from capsule_oauth.flows import refresh as refresh_flow

        # RefreshFunction's code, run for one connection: its log lines are that function's.
        as_refresh = LambdaContext.for_function(self.template.function("RefreshFunction"))
        with running(as_refresh):
            outcome = refresh_flow.refresh_connection(
                config.settings(),
                connection_id,
                owner=f"local:{uuid.uuid4().hex}",
                needs_refresh=refresh_flow.forced,
            )
        return {"connection_id": connection_id, "outcome": outcome.outcome.value}

    def disconnect(self, connection_id: str) -> dict[str, Any]:
        """DELETE /connections/{connection_id} as the app's backend would: signed."""
        answer = signed_request(
            "DELETE", f"{self.url}/connections/{quote(connection_id, safe='')}", LOCAL_CALLER
        )
        if answer.status_code == 204:
            return {"connection_id": connection_id, "status": "disconnected"}
        result: dict[str, Any] = answer.json()
        return result

    def connect_session(self, owner: str, *, return_here: bool = True) -> dict[str, Any]:
        """POST /connect-sessions as the app's backend would: signed with SigV4. The return
        URL is the landing page (a path on the API); without one the connector's pages show."""
        back = "/?" + urlencode({"owner": owner})  # the page keeps the owner typed into it
        body = {"owner": owner, **({"return_url": back} if return_here else {})}
        return signed_post(f"{self.url}/connect-sessions", body, LOCAL_CALLER)

    def confirm(self, result: str, owner: str) -> dict[str, Any]:
        """The app's return handler: POST /connect-sessions/confirm for the user it has
        signed in, signed with SigV4; the status and the answer, as the page shows them."""
        answer = signed_request(
            "POST",
            f"{self.url}/connect-sessions/confirm",
            LOCAL_CALLER,
            {"result": result, "owner": owner},
        )
        return {"status": answer.status_code, "body": answer.json()}

    def call_capsule(self, connection_id: str, path: str) -> dict[str, Any]:
        from capsule_oauth import CapsuleClient

        client = CapsuleClient(connection_id)
        body = client.get(path)
        limits = client.rate_limit
        return {
            "body": body,
            "rate_limit_remaining": limits.remaining if limits else None,
        }


_PRINTING = threading.Lock()


def _print_line(line: str) -> None:
    """One request line, whole: print() writes the text and its newline separately, so two
    requests answered at once (a landing form and the route it calls) could share a line."""
    with _PRINTING:
        sys.stdout.write(f"{line}\n")
        sys.stdout.flush()


def read_state_file(path: Path = STATE_FILE) -> dict[str, Any] | None:
    """What a running ``make local`` wrote about itself, if one is running."""
    if not path.exists():
        return None
    described: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return described
