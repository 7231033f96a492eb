"""The stack on one process: template.yaml's resources on moto, the Capsule emulator over HTTP,
the function environment in ``os.environ``, and the layer's caches as a cold container has them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import base as parameter_providers
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend

from bench.common import EVENTS_DIR
from capsule_oauth import aws, capsule, config, tokens
from capsule_oauth.config import Settings
from capsule_oauth.observability import metrics
from local.capsule_emulator import Account, CapsuleEmulator
from local.stack import Stack, Template, create_stack

_REQUEST_ID = re.compile(r'name="request_id"\s+value="([^"]+)"')


def reset_caches() -> None:
    """What a new Lambda container starts with: no clients, settings, secret or tokens."""
    aws.reset()
    config.settings.cache_clear()
    capsule.session.cache_clear()
    tokens.clear_cache()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
    # Providers hold boto3 clients bound to the mock they were made under.
    parameter_providers.DEFAULT_PROVIDERS.clear()  # type: ignore[attr-defined]
    metrics.clear_metrics()


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    return event


_ATOMIC = (
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "query",
    "scan",
    "batch_write_item",
)


@contextlib.contextmanager
def atomic_dynamodb() -> Iterator[None]:
    """One DynamoDB request at a time inside moto, as DynamoDB applies each one atomically.

    moto is not thread-safe: a Query sorts the index, then walks it to find
    ``ExclusiveStartKey`` while other threads' UpdateItems move items in it. With 16 refresh
    workers that hands back connections already returned (113 items read for 100 due in a
    trial run), which real DynamoDB never does. moto runs under the GIL anyway, so the lock
    costs no parallelism.
    """
    lock = threading.RLock()
    originals: dict[str, Callable[..., Any]] = {
        name: vars(DynamoDBBackend)[name] for name in _ATOMIC
    }

    def locked(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return original(*args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(DynamoDBBackend, name, locked(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(DynamoDBBackend, name, original)


@dataclass
class LocalStack:
    template: Template
    stack: Stack
    emulator: CapsuleEmulator

    @property
    def settings(self) -> Settings:
        return config.settings()


@contextlib.contextmanager
def local_stack(accounts: Iterable[Account] | None = None) -> Iterator[LocalStack]:
    """moto + the emulator + the function environment; everything undone on the way out."""
    emulator = CapsuleEmulator(accounts=accounts)
    saved = dict(os.environ)
    emulator.start()
    try:
        with mock_aws(), atomic_dynamodb():
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
            try:
                yield LocalStack(template, stack, emulator)
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
    base = authorise_url.split("/oauth/authorise", maxsplit=1)[0]
    with requests.Session() as http:
        page = http.get(authorise_url, timeout=10)
        page.raise_for_status()
        steps: list[tuple[str, dict[str, str]]] = [
            ("/oauth/authorise/account", {"subdomain": account.subdomain}),
            (
                "/oauth/authorise/login",
                {"username": account.username, "password": account.password},
            ),
        ]
        for path, form in steps:
            page = http.post(
                f"{base}{path}", data={"request_id": _request_id(page.text), **form}, timeout=10
            )
            page.raise_for_status()
        decision = http.post(
            f"{base}/oauth/authorise/decision",
            data={"request_id": _request_id(page.text), "decision": "allow"},
            allow_redirects=False,
            timeout=10,
        )
    if decision.status_code != 302:
        raise RuntimeError(f"the emulator answered {decision.status_code} to the decision")
    query = parse_qs(urlsplit(decision.headers["Location"]).query)
    return Approval(code=query["code"][0], state=query["state"][0])


def _request_id(page: str) -> str:
    match = _REQUEST_ID.search(page)
    if not match:
        raise RuntimeError("the emulator page has no request_id field")
    return unescape(match.group(1))
