"""What the tests run against: the template's stack on moto, and ``make local`` in a process.

Unit and handler tests get template.yaml's tables, key and secret on moto, with the fake
Capsule at ``CAPSULE_URL``; end-to-end and browser tests get ``python -m local`` in its own
process, as a developer runs it, and talk to it over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from moto import mock_aws

from local.stack import ROOT, Stack, Template, create_stack
from tests.support.capsule_fake import CLIENT_ID, CLIENT_SECRET

CAPSULE_URL = "https://capsule.test"


@contextlib.contextmanager
def stack_on_moto(template: Template) -> Iterator[Stack]:
    """The template's tables, key and secret on moto; the secret holds the fake's client."""
    with mock_aws():
        yield create_stack(
            template,
            client_credentials={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
            parameters={"CapsuleBaseUrl": CAPSULE_URL},
        )


@dataclass
class RunningDeployment:
    """``python -m local`` in its own process, as a developer runs it, and what it printed."""

    url: str
    capsule_url: str
    output: list[str]

    def printed(self) -> str:
        return "\n".join(self.output)

    def csrf_token(self) -> str:
        """The token the landing page puts in its forms, which every local POST needs."""
        page = requests.get(self.url, timeout=10).text
        found = re.search(r'name=csrf_token value="([^"]+)"', page)
        assert found, "the landing page's forms carry no CSRF token"
        return found.group(1)


@contextlib.contextmanager
def run_local_deployment(
    *arguments: str, env_extra: dict[str, str] | None = None
) -> Iterator[RunningDeployment]:
    """Start ``python -m local`` on free ports; stop it with Ctrl-C (SIGINT) on the way out.
    Without ``arguments``: verbose, every function's output in ``output`` too."""
    command = [sys.executable, "-m", "local", "--json", "--port", "0", "--aws-port", "0"]
    command += ["--capsule-port", "0", *(arguments or ("--verbose", "--no-state-file"))]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPSULE_"))}
    env.update(env_extra or {})
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
        pytest.fail(f"the local deployment did not start: {first}{process.stdout.read()}")
    described = json.loads(first)
    output: list[str] = []
    drain = threading.Thread(
        target=lambda: output.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
        daemon=True,
    )
    drain.start()
    try:
        yield RunningDeployment(described["url"], described["capsule_base_url"], output)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
        drain.join(timeout=5)
