"""Fixtures for the local tools' tests: a running Capsule emulator, a clock to move."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from local.capsule_emulator import CapsuleEmulator
from tests.support.emulator_client import CLIENT_ID, CLIENT_SECRET, Clock


@pytest.fixture
def emulator() -> Iterator[CapsuleEmulator]:
    with CapsuleEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, port=0) as emu:
        yield emu


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    state = Clock()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + state.offset)
    return state
