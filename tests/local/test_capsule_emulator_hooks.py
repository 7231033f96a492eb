"""The emulator's REST hooks: the three endpoints, admin only, 20 per site, deliveries on a
change, Capsule's retry schedule (compressible), and a hook dropped on 410."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from local.capsule_emulator import CapsuleEmulator
from local.capsule_emulator.hooks import RETRY_SCHEDULE, HookRegistry
from tests.support.emulator_client import CLIENT_ID, CLIENT_SECRET, TIMEOUT


@contextmanager
def target(statuses: list[int]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An app's hook target answering ``statuses`` in turn (the last one from then on)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            status = statuses[min(len(received), len(statuses)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/capsule-hooks/t", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fast() -> Iterator[CapsuleEmulator]:
    """An emulator whose retry schedule runs a thousand times faster."""
    with CapsuleEmulator(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, port=0, hook_retry_scale=0.001
    ) as emu:
        yield emu


def _bearer(emu: CapsuleEmulator, subdomain: str = "exampleco") -> dict[str, str]:
    user_id = emu.store.account(subdomain).user_id
    token = emu.issue_tokens_for(subdomain, user_id)["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _subscribe(emu: CapsuleEmulator, headers: dict[str, str], url: str, event: str) -> Any:
    body = {"restHook": {"event": event, "targetUrl": url, "description": "test"}}
    return requests.post(f"{emu.url}/api/v2/resthooks", json=body, headers=headers, timeout=5)


def _wait(condition: Any, seconds: float = 10) -> bool:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_subscribe_list_show_and_delete(emulator: CapsuleEmulator) -> None:
    headers = _bearer(emulator)
    made = _subscribe(emulator, headers, "https://app.test/hook", "party/created")
    assert made.status_code == 201
    hook = made.json()["restHook"]
    assert hook["event"] == "party/created"
    assert hook["targetUrl"] == "https://app.test/hook"

    listed = requests.get(f"{emulator.url}/api/v2/resthooks", headers=headers, timeout=TIMEOUT)
    assert listed.json() == {"restHooks": [hook]}
    one = requests.get(
        f"{emulator.url}/api/v2/resthooks/{hook['id']}", headers=headers, timeout=TIMEOUT
    )
    assert one.json() == {"restHook": hook}
    gone = requests.delete(
        f"{emulator.url}/api/v2/resthooks/{hook['id']}", headers=headers, timeout=TIMEOUT
    )
    assert gone.status_code == 204
    again = requests.get(f"{emulator.url}/api/v2/resthooks", headers=headers, timeout=TIMEOUT)
    assert again.json() == {"restHooks": []}


def test_only_an_administrator_may_manage_hooks(emulator: CapsuleEmulator) -> None:
    headers = _bearer(emulator, "northwind")

    assert _subscribe(emulator, headers, "https://app.test/h", "party/created").status_code == 403
    listed = requests.get(f"{emulator.url}/api/v2/resthooks", headers=headers, timeout=TIMEOUT)
    assert listed.status_code == 403


def test_an_unknown_event_is_refused(emulator: CapsuleEmulator) -> None:
    made = _subscribe(emulator, _bearer(emulator), "https://app.test/h", "party/exploded")
    assert made.status_code == 422


def test_a_site_holds_20_hooks_across_every_app_and_an_app_sees_only_its_own(
    emulator: CapsuleEmulator,
) -> None:
    for number in range(19):
        emulator.store.hooks.create(
            "exampleco", "another-app", "party/created", f"https://o/{number}", ""
        )
    headers = _bearer(emulator)

    assert _subscribe(emulator, headers, "https://app.test/1", "party/created").status_code == 201
    full = _subscribe(emulator, headers, "https://app.test/2", "party/created")

    assert full.status_code == 422
    assert "maximum of 20" in full.json()["message"]
    listed = requests.get(f"{emulator.url}/api/v2/resthooks", headers=headers, timeout=TIMEOUT)
    assert [h["targetUrl"] for h in listed.json()["restHooks"]] == ["https://app.test/1"]


def test_creating_a_party_through_api_v2_delivers_it_to_the_hooks_on_party_created(
    emulator: CapsuleEmulator,
) -> None:
    headers = _bearer(emulator)
    with target([200]) as (url, received):
        _subscribe(emulator, headers, url, "party/created")
        _subscribe(emulator, headers, url + "-updated", "party/updated")  # not this event
        made = requests.post(
            f"{emulator.url}/api/v2/parties",
            json={"party": {"firstName": "Grace", "lastName": "Hopper"}},
            headers=headers,
            timeout=TIMEOUT,
        )
        assert made.status_code == 201
        assert _wait(lambda: received)
        time.sleep(0.2)

    assert len(received) == 1
    assert received[0]["event"] == "party/created"
    assert received[0]["payload"] == [made.json()["party"]]


def test_the_home_page_button_changes_a_record(emulator: CapsuleEmulator) -> None:
    headers = _bearer(emulator)
    home = requests.get(emulator.url, timeout=TIMEOUT).text
    assert 'id="change-exampleco"' in home
    with target([200]) as (url, received):
        _subscribe(emulator, headers, url, "party/created")
        pressed = requests.post(
            f"{emulator.url}/_emulator/changes",
            data={"subdomain": "exampleco"},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        assert pressed.status_code == 303
        assert _wait(lambda: received)


def test_a_failing_target_is_retried_five_times_then_the_hook_is_dropped(
    fast: CapsuleEmulator,
) -> None:
    headers = _bearer(fast)
    with target([500]) as (url, received):
        _subscribe(fast, headers, url, "party/created")
        fast.store.create_party("exampleco", {})
        assert _wait(lambda: fast.store.hooks.dropped, seconds=15)

    assert len(received) == 1 + len(RETRY_SCHEDULE)
    assert fast.store.hooks.listed("exampleco", CLIENT_ID) == []


def test_a_410_drops_the_hook_at_once(fast: CapsuleEmulator) -> None:
    headers = _bearer(fast)
    with target([410]) as (url, received):
        _subscribe(fast, headers, url, "party/created")
        fast.store.create_party("exampleco", {})
        assert _wait(lambda: fast.store.hooks.dropped)

    assert len(received) == 1


def test_a_retried_delivery_that_succeeds_keeps_the_hook(fast: CapsuleEmulator) -> None:
    headers = _bearer(fast)
    with target([500, 503, 200]) as (url, received):
        _subscribe(fast, headers, url, "party/created")
        fast.store.create_party("exampleco", {})
        assert _wait(lambda: len(received) == 3)
        time.sleep(0.2)

    assert received[0] == received[2]
    assert len(fast.store.hooks.listed("exampleco", CLIENT_ID)) == 1


def test_the_retry_schedule_is_5s_1min_5min_15min_15min() -> None:
    now = [1000.0]
    registry = HookRegistry(clock=lambda: now[0])
    hook = registry.create("exampleco", "app", "party/created", "https://app.test/h", "")
    registry.record_changed("exampleco", "party/created", [{"id": 1}])
    waits: list[float] = []
    while registry.listed("exampleco", "app"):
        [(delivery, _)] = registry.take_due()
        registry.answered(delivery, 503)
        if registry.outbox:
            waits.append(registry.outbox[0].due_at - now[0])
            now[0] = registry.outbox[0].due_at

    assert waits == [5, 60, 300, 900, 900]
    assert registry.dropped == [hook.hook_id]
