"""``make demo`` runs to its end on a machine of its own ports, and prints no secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from local.stack import ROOT

pytestmark = pytest.mark.e2e


def test_the_demo_walks_every_step_and_prints_no_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPSULE_"))}
    run = subprocess.run(
        [sys.executable, "-m", "local.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    assert "Demo finished: connect, refresh, API call, management API and events" in run.stdout
    assert "Connection Created (version 2, connected)" in run.stdout  # saved pending, confirmed
    assert "Connection Disconnected" in run.stdout
    # Emulator tokens are long random strings; none is printed.
    assert not re.search(r"[A-Za-z0-9_-]{40,}", run.stdout)
