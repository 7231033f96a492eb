"""The Capsule emulator's API v2, its faults and its control plane, over real HTTP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from local.capsule_emulator import CapsuleEmulator, Faults
from tests.support.emulator_client import (
    CLIENT_ID,
    CLIENT_SECRET,
    TIMEOUT,
    Clock,
    api,
    refresh,
    token,
    tokens,
)

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- API


def test_users_current_with_bearer(emulator: CapsuleEmulator) -> None:
    user = api(emulator, "/users/current", tokens(emulator)["access_token"]).json()["user"]
    assert (user["id"], user["username"], user["name"]) == (1, "scott", "Scott Spacey")
    assert (user["locale"], user["timezone"], user["status"]) == (
        "en_GB",
        "Europe/London",
        "ACTIVE",
    )


def test_site_with_bearer(emulator: CapsuleEmulator) -> None:
    site = api(emulator, "/site", tokens(emulator)["access_token"]).json()["site"]
    assert site == {
        "url": "https://exampleco.capsulecrm.com",
        "subdomain": "exampleco",
        "name": "Example Co.",
    }


def test_api_without_token_is_401_with_www_authenticate(emulator: CapsuleEmulator) -> None:
    answer = api(emulator, "/users/current")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "message" in answer.json()


def test_api_with_unknown_token_is_401(emulator: CapsuleEmulator) -> None:
    assert api(emulator, "/site", "not-a-token").status_code == 401


def test_expired_access_token_is_401(emulator: CapsuleEmulator, clock: Clock) -> None:
    access = tokens(emulator)["access_token"]
    clock.advance(604800)
    answer = api(emulator, "/site", access)
    assert answer.status_code == 401
    assert "expired" in answer.json()["message"]


def test_rate_limit_headers_count_down(emulator: CapsuleEmulator) -> None:
    access = tokens(emulator)["access_token"]
    first = api(emulator, "/site", access).headers
    second = api(emulator, "/site", access).headers
    assert first["X-RateLimit-Limit"] == "4000"
    assert (first["X-RateLimit-Remaining"], second["X-RateLimit-Remaining"]) == ("3999", "3998")
    assert int(first["X-RateLimit-Reset"]) % 3600 == 0
    assert int(first["X-RateLimit-Reset"]) > time.time()


def test_over_the_rate_limit_is_429() -> None:
    with CapsuleEmulator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, rate_limit=2) as emu:
        access = tokens(emu)["access_token"]
        api(emu, "/site", access)
        api(emu, "/site", access)
        answer = api(emu, "/site", access)
    assert (answer.status_code, answer.json()) == (429, {"error": "rate limit reached"})
    assert answer.headers["X-RateLimit-Remaining"] == "0"


def test_token_without_read_scope_is_403(emulator: CapsuleEmulator) -> None:
    access = emulator.issue_tokens_for("exampleco", 1, scope="write")["access_token"]
    assert api(emulator, "/site", access).status_code == 403


def test_parties_paginate(emulator: CapsuleEmulator) -> None:
    access = tokens(emulator)["access_token"]
    answer = api(emulator, "/parties?page=1&perPage=5", access)
    assert len(answer.json()["parties"]) == 5
    assert answer.headers["X-Pagination-Has-More"] == "true"
    assert 'rel="next"' in answer.headers["Link"]


# ----------------------------------------------------------------------------- faults


def test_latency_fault_delays_the_answer(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("latency", seconds=0.3)
    started = time.monotonic()
    answer = token(emulator, grant_type="password")
    assert time.monotonic() - started >= 0.3
    assert answer.json()["error"] == "unsupported_grant_type"


def test_status_fault_answers_that_status(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("status", status=502)
    answer = token(emulator, grant_type="refresh_token", refresh_token="r")
    assert (answer.status_code, answer.json()["error"]) == (502, "server_error")


def test_rate_limit_fault_answers_429_with_headers(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("rate_limit", target="api", reset_in=30)
    answer = api(emulator, "/site", tokens(emulator)["access_token"])
    assert answer.status_code == 429
    assert int(answer.headers["X-RateLimit-Reset"]) >= int(time.time()) + 29


def test_malformed_fault_answers_non_json(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("malformed")
    answer = token(emulator, grant_type="password")
    assert (answer.status_code, answer.text) == (200, "<html>oops")
    assert answer.headers["Content-Type"] == "application/json"


def test_invalid_grant_fault_refuses_a_good_refresh(emulator: CapsuleEmulator) -> None:
    grant = tokens(emulator)
    emulator.faults.add("invalid_grant")
    assert refresh(emulator, grant["refresh_token"]).json()["error"] == "invalid_grant"


def test_drop_fault_closes_the_connection(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("drop")
    with pytest.raises(requests.ConnectionError):
        token(emulator, grant_type="password")


def test_fault_is_used_up_after_times(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("status", status=500, times=2)
    statuses = [token(emulator, grant_type="password").status_code for _ in range(3)]
    assert statuses == [500, 500, 400]


def test_fault_for_another_target_is_left_alone(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("status", target="api", status=503)
    assert token(emulator, grant_type="password").status_code == 400
    assert len(emulator.faults) == 1


def test_any_target_hits_the_api_too(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("status", target="any", status=503)
    assert api(emulator, "/site", "whatever").status_code == 503


def test_faults_over_http(emulator: CapsuleEmulator) -> None:
    created = requests.post(
        f"{emulator.url}/_emulator/faults",
        json={"kind": "status", "target": "token", "times": 1, "status": 503},
        timeout=TIMEOUT,
    )
    assert created.status_code == 201
    assert token(emulator, grant_type="password").status_code == 503


def test_delete_clears_faults_over_http(emulator: CapsuleEmulator) -> None:
    emulator.faults.add("drop", times=None)
    requests.delete(f"{emulator.url}/_emulator/faults", timeout=TIMEOUT)
    assert token(emulator, grant_type="password").status_code == 400


def test_bad_fault_over_http_is_400(emulator: CapsuleEmulator) -> None:
    answer = requests.post(
        f"{emulator.url}/_emulator/faults", json={"kind": "meteor"}, timeout=TIMEOUT
    )
    assert answer.status_code == 400


def test_faults_reject_parameters_they_do_not_take() -> None:
    with pytest.raises(ValueError, match="latency faults take no status"):
        Faults().add("latency", status=500)


# ----------------------------------------------------------------------------- control plane


def test_state_counts_grants_and_holds_no_secrets(emulator: CapsuleEmulator) -> None:
    grant = tokens(emulator)
    token(emulator, grant_type="password")
    answer = requests.get(f"{emulator.url}/_emulator/state", timeout=TIMEOUT)
    state = answer.json()
    assert state["accounts"]["exampleco"]["live_grants"] == 1
    assert state["token_requests"] == 1
    for secret in (grant["access_token"], grant["refresh_token"], CLIENT_SECRET, "capsule"):
        assert secret not in answer.text


def test_cli_serves_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.capsule_emulator", "--port", "0", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        assert requests.get(url + "/", timeout=TIMEOUT).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
