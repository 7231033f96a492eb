"""Fixtures every test shares: a moto stack built from template.yaml, a fake Capsule, events."""

from __future__ import annotations

import os

# Powertools reads these when observability.py builds its Logger / Metrics at import, as in
# Lambda, where the environment exists before any import: set them before importing it.
os.environ.update(
    POWERTOOLS_SERVICE_NAME="capsule-connector",
    POWERTOOLS_METRICS_NAMESPACE="CapsuleConnector",
)

import functools
import io
import logging
from collections.abc import Iterator

import pytest
import responses

from capsule_oauth import config
from capsule_oauth.observability import logger
from local import lambda_container
from local.lambda_container import Invoke, reset_caches
from local.stack import Stack, Template, atomic_dynamodb
from tests.support.capsule_fake import FakeCapsule
from tests.support.stacks import CAPSULE_URL, RunningDeployment, run_local_deployment, stack_on_moto
from tests.support.status_events import StatusEvents


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real AWS, no leftovers: fake credentials and fresh caches for every test."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    reset_caches()
    yield
    reset_caches()


@pytest.fixture(scope="session")
def template() -> Template:
    return Template.load()


@pytest.fixture
def stack(template: Template, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The template's tables, key and secret on moto, and its environment in os.environ."""
    with stack_on_moto(template) as created:
        for name, value in created.environment("CallbackFunction").items():
            monkeypatch.setenv(name, value)
        yield created


@pytest.fixture
def applied_at_once(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """ConfirmConnections=false: every connection applies at once, as before confirming
    existed. For tests of the sign-in's own mechanics; confirming has tests of its own."""
    monkeypatch.setenv("CONFIRM_CONNECTIONS", "false")
    config.settings.cache_clear()


@pytest.fixture
def settings(stack: Stack) -> config.Settings:
    return config.settings()


@pytest.fixture
def fake_capsule() -> Iterator[FakeCapsule]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeCapsule(mock, CAPSULE_URL)


@pytest.fixture
def invoke(template: Template, stack: Stack) -> Invoke:
    """Run a function's handler, named by its logical id in template.yaml, on an event."""
    return functools.partial(lambda_container.invoke, template)


@pytest.fixture
def atomic_moto() -> Iterator[None]:
    """moto's DynamoDB atomic across threads, as DynamoDB is, for tests that race."""
    with atomic_dynamodb():
        yield


@pytest.fixture(scope="session")
def local_deployment() -> Iterator[RunningDeployment]:
    """``make local`` in its own process, shared by the end-to-end and browser tests."""
    with run_local_deployment() as running:
        yield running


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Every line the Powertools logger writes, formatted as Lambda receives it, at DEBUG.

    The logger's handler holds the stdout it found at import, so capsys cannot see it in
    later tests: point that handler at a buffer instead.
    """
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    level = logger.log_level
    logger.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        handler.setStream(previous)
        logger.setLevel(level)


@pytest.fixture
def status_events(template: Template, stack: Stack) -> StatusEvents:
    """The stream → EventsFunction → bus → queue path on moto, with nothing published yet."""
    return StatusEvents.wire(template, stack)
