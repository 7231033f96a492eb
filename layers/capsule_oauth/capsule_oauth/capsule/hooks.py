"""Capsule's REST hooks over HTTP: list, subscribe, unsubscribe (``/api/v2/resthooks``).

Every hook call to Capsule leaves through ``_call``: the one place a per-user call budget
applies. A hook's ``targetUrl`` holds the connection's hook token, so it is kept out of
``repr`` and never logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from capsule_oauth.capsule import api
from capsule_oauth.config import Settings
from capsule_oauth.errors import (
    CapsuleAPIError,
    CapsuleBadResponse,
    HookLimitReached,
    HooksNotAllowed,
)

PATH = "/resthooks"
# How Capsule may word a refusal for the account's hook limit (the status is not documented).
_LIMIT_WORDS = re.compile(r"limit|maximum|too many|20", re.IGNORECASE)


@dataclass(frozen=True)
class RestHook:
    hook_id: str
    event: str
    target_url: str = field(repr=False)


@dataclass(frozen=True)
class HookCaller:
    """Who manages hooks: the connection's access token, and the Capsule user's budget that
    every hook call draws from (as every API v2 call does)."""

    access_token: str = field(repr=False)
    draw: api.Draw


def _call(
    settings: Settings,
    caller: HookCaller,
    method: str,
    path: str,
    *,
    deadline: float | None,
    json: Any = None,
) -> api.APIResponse:
    """One hook call to Capsule; a refusal becomes what it means for hooks."""
    try:
        return api.api_request(
            settings.capsule_base_url,
            caller.access_token,
            method,
            path,
            timeout=settings.http_timeout_seconds,
            json=json,
            deadline=deadline,
            draw=caller.draw,
        )
    except CapsuleAPIError as refused:
        if refused.status == 403:
            raise HooksNotAllowed(refused.status, refused.message, refused.errors) from None
        limit_words = " ".join([refused.message, *(str(e) for e in refused.errors)])
        if refused.status in (400, 409, 422, 429) and _LIMIT_WORDS.search(limit_words):
            raise HookLimitReached(refused.status, refused.message, refused.errors) from None
        raise


def _hook(value: object) -> RestHook:
    if not isinstance(value, dict):
        raise CapsuleBadResponse("Capsule listed a REST hook that is not an object")
    hook_id, event, target = value.get("id"), value.get("event"), value.get("targetUrl")
    if isinstance(hook_id, bool) or not isinstance(hook_id, int | str) or str(hook_id) == "":
        raise CapsuleBadResponse("Capsule listed a REST hook without an id")
    return RestHook(str(hook_id), str(event or ""), str(target or ""))


def list_hooks(
    settings: Settings, caller: HookCaller, *, deadline: float | None = None
) -> list[RestHook]:
    """This app's hooks on the account (Capsule shows an app only its own)."""
    body = _call(settings, caller, "GET", PATH, deadline=deadline).body
    listed = body.get("restHooks") if isinstance(body, dict) else None
    if not isinstance(listed, list):
        raise CapsuleBadResponse("Capsule's REST hook list has no restHooks array")
    return [_hook(item) for item in listed]


def create_hook(
    settings: Settings,
    caller: HookCaller,
    *,
    event: str,
    target_url: str,
    description: str,
    deadline: float | None = None,
) -> RestHook:
    """Subscribe ``target_url`` to ``event``; raises HooksNotAllowed, HookLimitReached."""
    body = _call(
        settings,
        caller,
        "POST",
        PATH,
        deadline=deadline,
        json={"restHook": {"event": event, "targetUrl": target_url, "description": description}},
    ).body
    created = body.get("restHook") if isinstance(body, dict) else None
    hook = _hook(created)
    return RestHook(hook.hook_id, hook.event or event, hook.target_url or target_url)


def delete_hook(
    settings: Settings, caller: HookCaller, hook_id: str, *, deadline: float | None = None
) -> None:
    """Unsubscribe one hook; one that is already gone counts as deleted."""
    if not re.fullmatch(r"[0-9A-Za-z_-]{1,64}", hook_id):
        raise ValueError("a REST hook id is digits or letters")
    try:
        _call(settings, caller, "DELETE", f"{PATH}/{hook_id}", deadline=deadline)
    except CapsuleAPIError as refused:
        if refused.status != 404:
            raise
