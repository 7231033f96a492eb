"""Fixtures every test shares: a moto stack built from template.yaml, a fake Capsule, events."""

from __future__ import annotations

import os

# Powertools reads these when observability.py builds its Logger / Metrics at import, as in
# Lambda, where the environment exists before any import: set them before importing it.
os.environ.update(
    POWERTOOLS_SERVICE_NAME="capsule-connector",
    POWERTOOLS_METRICS_NAMESPACE="CapsuleConnector",
)

import io
import json
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import responses
from moto import mock_aws

from capsule_oauth import config
from capsule_oauth.observability import logger
from local.lambda_container import atomic_dynamodb, reset_caches
from local.stack import (
    ROOT,
    LambdaContext,
    Stack,
    Template,
    create_stack,
    load_handler,
)
from tests.support.capsule_fake import CLIENT_ID, CLIENT_SECRET, FakeCapsule

CAPSULE_URL = "https://capsule.test"


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
    with mock_aws():
        created = create_stack(
            template,
            client_credentials={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            parameters={"CapsuleBaseUrl": CAPSULE_URL},
        )
        for name, value in created.environment("CallbackFunction").items():
            monkeypatch.setenv(name, value)
        yield created


@pytest.fixture
def settings(stack: Stack) -> config.Settings:
    return config.settings()


@pytest.fixture
def fake_capsule() -> Iterator[FakeCapsule]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FakeCapsule(mock, CAPSULE_URL)


Invoke = Callable[[str, dict[str, Any]], Any]


@pytest.fixture
def invoke(template: Template, stack: Stack) -> Invoke:
    """Run a function's handler, named by its logical id in template.yaml, on an event."""

    def run(logical_id: str, event: dict[str, Any]) -> Any:
        spec = template.function(logical_id)
        handler = load_handler(spec)
        return handler(event, LambdaContext.for_function(spec))

    return run


@pytest.fixture
def atomic_moto() -> Iterator[None]:
    """moto's DynamoDB atomic across threads, as DynamoDB is, for tests that race."""
    with atomic_dynamodb():
        yield


@dataclass
class RunningStack:
    """``python -m local`` in its own process, as a developer runs it, and what it printed."""

    url: str
    capsule_url: str
    output: list[str]

    def printed(self) -> str:
        return "\n".join(self.output)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[RunningStack]:
    command = [sys.executable, "-m", "local", "--json", "--no-state-file"]
    command += ["--port", "0", "--aws-port", "0", "--capsule-port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPSULE_"))}
    env["PYTHONUNBUFFERED"] = "1"  # log lines arrive as they are written
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    if not first.startswith("{"):
        process.kill()
        pytest.fail(f"the local stack did not start: {first}{process.stdout.read()}")
    described = json.loads(first)
    output: list[str] = []
    drain = threading.Thread(
        target=lambda: output.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    drain.start()
    yield RunningStack(described["url"], described["capsule_base_url"], output)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    drain.join(timeout=5)


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
