"""Capsule's REST hooks, emulated: the three endpoints, the account limit, and deliveries.

``/api/v2/resthooks`` (GET, POST) and ``/api/v2/resthooks/{id}`` (GET, DELETE): only an
administrator's token may use them, an app sees only the hooks it subscribed, and a site
holds at most 20 hooks across every app. When a record changes (``POST /api/v2/parties``,
or the button on the emulator's home page) each hook of the site on that event gets a POST
of ``{"event": ..., "payload": [record]}``. A delivery that is not answered 2xx is retried
after 5 s, 1 min, 5 min, 15 min and 15 min (times ``retry_scale``: a small one compresses
the schedule for tests and demos), then the hook is dropped; ``410 Gone`` drops it at once.

Deliveries leave from the HTTP emulator's own thread (server.py); the unit tests' fake has
none, so there they wait in ``outbox``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

MAX_HOOKS_PER_SITE: Final = 20
RETRY_SCHEDULE: Final = (5, 60, 300, 900, 900)  # seconds after each failed attempt
EVENTS: Final = frozenset(
    f"{entity}/{change}"
    for entity, changes in {
        "party": ("created", "updated", "deleted"),
        "kase": ("created", "updated", "deleted", "closed", "moved"),
        "opportunity": ("created", "updated", "deleted", "closed", "moved"),
        "task": ("created", "updated", "completed"),
        "user": ("created", "updated", "deleted"),
    }.items()
    for change in changes
)


class HookRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Hook:
    hook_id: int
    subdomain: str
    client_id: str
    event: str
    target_url: str = field(repr=False)
    description: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.hook_id,
            "event": self.event,
            "targetUrl": self.target_url,
            "description": self.description,
        }


@dataclass
class Delivery:
    hook_id: int
    body: bytes = field(repr=False)
    due_at: float
    attempts: int = 0


@dataclass
class HookRegistry:
    """Every site's hooks and the deliveries waiting to go out."""

    clock: Callable[[], float]
    retry_scale: float = 1.0
    lock: threading.RLock = field(default_factory=threading.RLock)
    hooks: dict[int, Hook] = field(default_factory=dict)
    outbox: list[Delivery] = field(default_factory=list)
    attempts: list[tuple[int, int | None]] = field(default_factory=list)  # (hook id, status)
    dropped: list[int] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)
    _next_id: int = 100

    def listed(self, subdomain: str, client_id: str) -> list[Hook]:
        with self.lock:
            return [
                h
                for h in self.hooks.values()
                if (h.subdomain, h.client_id) == (subdomain, client_id)
            ]

    def create(
        self, subdomain: str, client_id: str, event: str, target_url: str, description: str
    ) -> Hook:
        if event not in EVENTS:
            raise HookRefused(422, f"event {event!r} is not a REST hook event")
        if not target_url.startswith(("https://", "http://")) or len(target_url) > 2048:
            raise HookRefused(422, "targetUrl must be an absolute http(s) URL")
        with self.lock:
            if sum(1 for h in self.hooks.values() if h.subdomain == subdomain) >= (
                MAX_HOOKS_PER_SITE
            ):
                raise HookRefused(
                    422, f"A maximum of {MAX_HOOKS_PER_SITE} REST hooks can be subscribed"
                )
            self._next_id += 1
            hook = Hook(self._next_id, subdomain, client_id, event, target_url, description[:255])
            self.hooks[hook.hook_id] = hook
            return hook

    def find(self, subdomain: str, client_id: str, hook_id: int) -> Hook | None:
        with self.lock:
            hook = self.hooks.get(hook_id)
            if hook is None or (hook.subdomain, hook.client_id) != (subdomain, client_id):
                return None
            return hook

    def delete(self, hook_id: int) -> None:
        with self.lock:
            self.hooks.pop(hook_id, None)
            self.outbox = [d for d in self.outbox if d.hook_id != hook_id]

    def drop(self, hook_id: int) -> None:
        """Capsule gave up on the hook (410, or every retry failed)."""
        with self.lock:
            if hook_id in self.hooks:
                self.dropped.append(hook_id)
            self.delete(hook_id)

    def record_changed(self, subdomain: str, event: str, records: list[dict[str, object]]) -> int:
        """A change on the site: one delivery per hook on that event. Returns how many."""
        body = json.dumps({"event": event, "payload": records}).encode("utf-8")
        with self.lock:
            targets = [
                h.hook_id
                for h in self.hooks.values()
                if (h.subdomain, h.event) == (subdomain, event)
            ]
            now = self.clock()
            self.outbox.extend(Delivery(hook_id, body, now) for hook_id in targets)
        self.wake.set()
        return len(targets)

    def take_due(self) -> list[tuple[Delivery, str]]:
        """Deliveries whose time has come, with their target, out of the outbox."""
        with self.lock:
            now = self.clock()
            due = [d for d in self.outbox if d.due_at <= now and d.hook_id in self.hooks]
            self.outbox = [d for d in self.outbox if d not in due and d.hook_id in self.hooks]
            return [(d, self.hooks[d.hook_id].target_url) for d in due]

    def next_due_in(self) -> float | None:
        with self.lock:
            if not self.outbox:
                return None
            return max(0.0, min(d.due_at for d in self.outbox) - self.clock())

    def answered(self, delivery: Delivery, status: int | None) -> None:
        """What the target answered (None: no answer): done, dropped, or retried later."""
        with self.lock:
            self.attempts.append((delivery.hook_id, status))
            if status is not None and 200 <= status < 300:
                return
            if status == 410 or delivery.attempts >= len(RETRY_SCHEDULE):
                self.drop(delivery.hook_id)
                return
            wait = RETRY_SCHEDULE[delivery.attempts] * self.retry_scale
            delivery.attempts += 1
            delivery.due_at = self.clock() + wait
            self.outbox.append(delivery)

    def summary(self) -> dict[str, object]:
        """Counts only: a target URL holds its app's hook token."""
        with self.lock:
            per_site: dict[str, int] = {}
            for hook in self.hooks.values():
                per_site[hook.subdomain] = per_site.get(hook.subdomain, 0) + 1
            return {
                "hooks": per_site,
                "waiting_deliveries": len(self.outbox),
                "delivery_attempts": len(self.attempts),
                "dropped_hooks": len(self.dropped),
                "retry_scale": self.retry_scale,
            }


def handle(
    registry: HookRegistry,
    method: str,
    path: str,
    *,
    subdomain: str,
    client_id: str,
    admin: bool,
    body: Mapping[str, object] | None,
) -> tuple[int, dict[str, object]]:
    """``/resthooks`` and ``/resthooks/{id}`` (path relative to /api/v2): (status, JSON)."""
    if not admin:
        raise HookRefused(403, "REST hooks can only be managed by an account administrator")
    if path == "/resthooks":
        if method == "GET":
            return 200, {"restHooks": [h.as_json() for h in registry.listed(subdomain, client_id)]}
        if method == "POST":
            wanted = (body or {}).get("restHook")
            if not isinstance(wanted, dict):
                raise HookRefused(422, "the body must hold a restHook object")
            hook = registry.create(
                subdomain,
                client_id,
                str(wanted.get("event") or ""),
                str(wanted.get("targetUrl") or ""),
                str(wanted.get("description") or ""),
            )
            return 201, {"restHook": hook.as_json()}
        raise HookRefused(405, f"{method} is not allowed here")
    raw_id = path.removeprefix("/resthooks/")
    found = registry.find(subdomain, client_id, int(raw_id)) if raw_id.isdigit() else None
    if found is None:
        raise HookRefused(404, "Could not find resource")
    if method == "GET":
        return 200, {"restHook": found.as_json()}
    if method == "DELETE":
        registry.delete(found.hook_id)
        return 204, {}
    raise HookRefused(405, f"{method} is not allowed here")
