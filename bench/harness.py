"""The stack on one process: template.yaml's resources on moto, the Capsule emulator over HTTP,
the function environment in ``os.environ``, and the layer's caches as a cold container has them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from moto import mock_aws

from capsule_oauth import config
from capsule_oauth.config import Settings
from capsule_oauth.store.sessions import SessionStore
from local import consent
from local.capsule_emulator import Account, CapsuleEmulator
from local.lambda_container import reset_caches
from local.stack import Stack, Template, atomic_dynamodb, create_stack, load_event


@dataclass
class BenchStack:
    template: Template
    stack: Stack
    emulator: CapsuleEmulator

    @property
    def settings(self) -> Settings:
        return config.settings()


def stack_for(emulator: CapsuleEmulator) -> tuple[Template, Stack]:
    """template.yaml's resources on whichever moto boto3 reaches now, the emulator as Capsule,
    and the function environment in ``os.environ``, caches as a cold container has them."""
    template = Template.load()
    stack = create_stack(
        template,
        client_credentials={
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
        },
        parameters={"CapsuleBaseUrl": emulator.url},
        prefix="bench",
    )
    os.environ.update(stack.environment("CallbackFunction"))
    reset_caches()
    return template, stack


@contextlib.contextmanager
def bench_stack(accounts: Iterable[Account] | None = None) -> Iterator[BenchStack]:
    """moto + the emulator + the function environment; everything undone on the way out."""
    emulator = CapsuleEmulator(accounts=accounts)
    saved = dict(os.environ)
    emulator.start()
    try:
        with mock_aws(), atomic_dynamodb():
            template, stack = stack_for(emulator)
            try:
                yield BenchStack(template, stack, emulator)
            finally:
                reset_caches()
    finally:
        emulator.stop()
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class Approval:
    code: str
    state: str


def approve(authorise_url: str, account: Account) -> Approval:
    """Walk the emulator's pages as a person would (pick account, log in, allow)."""
    with requests.Session() as http:
        back = consent.approve(
            http,
            authorise_url,
            subdomain=account.subdomain,
            username=account.username,
            password=account.password,
        )
    query = parse_qs(urlsplit(back).query)
    return Approval(code=query["code"][0], state=query["state"][0])


def start_event(owner: str = "anonymous") -> dict[str, Any]:
    """events/start.json with a live connect session, as the app's connect link opens it."""
    created = SessionStore(config.settings()).create(
        owner, return_url=None, reconnect_connection_id=None, now=int(time.time())
    )
    event = load_event("start.json")
    event["queryStringParameters"] = {"session": created.token}
    event["rawQueryString"] = urlencode(event["queryStringParameters"])
    return event
