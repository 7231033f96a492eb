"""REST hooks as tests use them: hooks switched on, a connection subscribed, a delivery
sent to the intake, and the events it published read back from the bus."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from capsule_oauth import config
from capsule_oauth.flows import hooks as hook_flow
from local.lambda_container import Invoke
from local.stack import Stack, load_event
from local.streams import BusQueue
from tests.support.capsule_fake import FakeCapsule
from tests.support.connections import CID

API = "https://abc123.execute-api.us-east-1.amazonaws.com"
EVENTS = ("party/created", "party/updated")


def hooks_on(monkeypatch: pytest.MonkeyPatch, events: tuple[str, ...] = EVENTS) -> None:
    monkeypatch.setenv("CAPSULE_HOOK_EVENTS", ",".join(events))
    config.settings.cache_clear()


def subscribed(fake: FakeCapsule, subdomain: str = "exampleco") -> list[Any]:
    """The hooks the fake Capsule holds for the site (every app's)."""
    return [h for h in fake.store.hooks.hooks.values() if h.subdomain == subdomain]


def token_of(fake: FakeCapsule, subdomain: str = "exampleco") -> str:
    """The hook token in the target URL of the site's hooks (all share one)."""
    tokens = {urlsplit(h.target_url).path.rsplit("/", 1)[-1] for h in subscribed(fake, subdomain)}
    assert len(tokens) == 1, tokens
    token: str = tokens.pop()
    return token


def subscribe(connection_id: str = CID) -> str | None:
    return hook_flow.subscribe_hooks(connection_id, api_base_url=API)


def delivery_event(token: str, body: Any, *, raw: str | None = None) -> dict[str, Any]:
    event = load_event("hook-delivery.json")
    event["pathParameters"] = {"hook_token": token}
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/capsule-hooks/{token}"
    event["body"] = raw if raw is not None else json.dumps(body)
    return event


def deliver(invoke: Invoke, token: str, body: Any, *, raw: str | None = None) -> int:
    """POST a delivery to the intake; the status it answered."""
    answer = invoke("HookIntakeFunction", delivery_event(token, body, raw=raw))
    assert answer["body"] == ""
    status: int = answer["statusCode"]
    return status


@dataclass
class Bus:
    """The connector's bus routed to a queue, as an app's rule would route it."""

    queue: BusQueue

    @classmethod
    def wire(cls, stack: Stack, name: str = "app-record-changes") -> Bus:
        environment = stack.environment("HookIntakeFunction")
        return cls(
            BusQueue.create(
                bus=environment["EVENT_BUS_NAME"], source=environment["EVENT_SOURCE"], name=name
            )
        )

    def changes(self) -> list[dict[str, Any]]:
        return [e for e in self.queue.drain() if e["detail-type"] == "Capsule Record Changed"]
