"""Faults to inject: latency, an error status, a rate limit, garbage, invalid_grant, a drop.

Targets: ``token`` (/oauth/token), ``revoke`` (the revocation endpoints), ``api`` (/api/...),
``any`` (every request but the control plane). A request takes the first queued fault that
applies to it; ``invalid_grant`` applies to /oauth/token only. ``latency`` and ``drop`` act on
the connection, so the HTTP server applies them; ``reply_for`` answers the others.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from local.capsule_emulator.api import rate_headers
from local.capsule_emulator.oauth import NO_STORE
from local.capsule_emulator.wire import Reply, json_reply

FAULT_KINDS: Final = ("latency", "status", "rate_limit", "malformed", "invalid_grant", "drop")
FAULT_TARGETS: Final = ("token", "revoke", "api", "any")
_FAULT_PARAMS: Final[Mapping[str, frozenset[str]]] = {
    "latency": frozenset({"seconds"}),
    "status": frozenset({"status"}),
    "rate_limit": frozenset({"reset_in"}),
    "malformed": frozenset(),
    "invalid_grant": frozenset(),
    "drop": frozenset(),
}


@dataclass
class Fault:
    """One queued fault. ``times`` is how many more requests it hits; None = until cleared."""

    kind: str
    target: str
    times: int | None
    seconds: float = 1.0
    status: int = 503
    reset_in: int = 60

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, "target": self.target, "times": self.times}
        if self.kind == "latency":
            data["seconds"] = self.seconds
        elif self.kind == "status":
            data["status"] = self.status
        elif self.kind == "rate_limit":
            data["reset_in"] = self.reset_in
        return data


class Faults:
    """A thread-safe queue of faults to inject, consumed in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []

    def add(
        self, kind: str, target: str = "token", times: int | None = 1, **params: float
    ) -> Fault:
        """Queue a fault. Params: ``seconds`` (latency), ``status`` (status), ``reset_in``
        (rate_limit). Raises ValueError on anything it does not understand."""
        fault = _make_fault(kind, target, times, params)
        with self._lock:
            self._queue.append(fault)
        return fault

    def clear(self) -> int:
        """Drop every queued fault; returns how many there were."""
        with self._lock:
            count = len(self._queue)
            self._queue.clear()
        return count

    def pending(self) -> list[dict[str, object]]:
        with self._lock:
            return [fault.as_dict() for fault in self._queue]

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def take(self, endpoint: str) -> Fault | None:
        """Consume one use of the first fault that applies to a request on ``endpoint``
        (``token``, ``revoke``, ``api`` or ``other``)."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.target not in (endpoint, "any"):
                    continue
                if fault.kind == "invalid_grant" and endpoint != "token":
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        del self._queue[index]
                return Fault(fault.kind, fault.target, fault.times, **_fault_params(fault))
        return None


def _fault_params(fault: Fault) -> dict[str, Any]:
    return {"seconds": fault.seconds, "status": fault.status, "reset_in": fault.reset_in}


def _make_fault(kind: str, target: str, times: int | None, params: Mapping[str, float]) -> Fault:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
    if target not in FAULT_TARGETS:
        raise ValueError(f"unknown fault target {target!r}; expected one of {FAULT_TARGETS}")
    if kind == "invalid_grant" and target not in ("token", "any"):
        raise ValueError("invalid_grant faults only apply to the token endpoint")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("times must be a positive integer or None (= until cleared)")
    unknown = set(params) - _FAULT_PARAMS[kind]
    if unknown:
        raise ValueError(f"{kind} faults take no {', '.join(sorted(unknown))}")
    fault = Fault(kind, target, times)
    _set_fault_params(fault, params)
    return fault


def _set_fault_params(fault: Fault, params: Mapping[str, float]) -> None:
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
    if "seconds" in params:
        fault.seconds = float(params["seconds"])
        if not 0 <= fault.seconds <= 600:
            raise ValueError("seconds must be between 0 and 600")
    if "status" in params:
        if int(params["status"]) != params["status"] or not 400 <= params["status"] <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        fault.status = int(params["status"])
    if "reset_in" in params:
        if int(params["reset_in"]) != params["reset_in"] or params["reset_in"] < 0:
            raise ValueError("reset_in must be a non-negative whole number of seconds")
        fault.reset_in = int(params["reset_in"])


def add_from_json(faults: Faults, data: Mapping[str, object]) -> Fault:
    """POST /_emulator/faults: ``kind``, ``target``, ``times`` and the kind's parameter."""
    unknown = set(data) - {"kind", "target", "times", "seconds", "status", "reset_in"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    kind, target, times = data.get("kind"), data.get("target", "token"), data.get("times", 1)
    if not isinstance(kind, str) or not isinstance(target, str):
        raise ValueError("kind and target must be strings")
    if times is not None and not isinstance(times, int):
        raise ValueError("times must be a positive integer or null")
    params: dict[str, float] = {}
    for name in ("seconds", "status", "reset_in"):
        value = data.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number")
        params[name] = value
    return faults.add(kind, target, times, **params)


def reply_for(fault: Fault, endpoint: str, rate_limit: int, now: float) -> Reply:
    """The answer a status, rate_limit, malformed or invalid_grant fault gives."""
    if fault.kind == "malformed":
        return Reply(200, b"<html>oops")
    if fault.kind == "rate_limit":
        headers = rate_headers(rate_limit, 0, int(now) + fault.reset_in)
        return json_reply(429, {"error": "rate limit reached"}, headers)
    if fault.kind == "invalid_grant":
        payload = {
            "error": "invalid_grant",
            "error_description": "The grant is invalid (injected fault)",
        }
        return json_reply(400, payload, NO_STORE)
    message = f"Injected fault: HTTP {fault.status}"
    if endpoint in ("token", "revoke"):
        return json_reply(fault.status, {"error": "server_error", "error_description": message})
    return json_reply(fault.status, {"message": message})
