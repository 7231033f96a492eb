"""get_connection and list_connections: the management API's reads, in Python."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.client import BaseClient

from capsule_oauth import ConnectionNotFound, InvalidOwner, get_connection, list_connections
from capsule_oauth.config import Settings
from tests.support.capsule_fake import FakeCapsule
from tests.support.connections import seed_owned


def test_an_owner_lists_its_own_connections_with_one_query(
    settings: Settings, fake_capsule: FakeCapsule, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = [seed_owned(settings, fake_capsule, "tenant-a", subdomain=s)[0] for s in "xyz"]
    seed_owned(settings, fake_capsule, "tenant-b", subdomain="x")
    sent: list[tuple[str, dict[str, Any]]] = []
    original = BaseClient._make_api_call  # type: ignore[attr-defined]

    def spy(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        sent.append((operation, params))
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)

    listed = list_connections("tenant-a", settings=settings)

    assert [c["connection_id"] for c in listed] == sorted(mine)
    assert [(op, params.get("IndexName")) for op, params in sent] == [("Query", "ByOwner")]


def test_a_malformed_owner_is_refused_before_any_read(settings: Settings) -> None:
    with pytest.raises(InvalidOwner, match="owner must be 1-128 characters"):
        list_connections("has space", settings=settings)


def test_get_connection_reads_one_and_says_when_there_is_none(
    settings: Settings, fake_capsule: FakeCapsule
) -> None:
    cid, grant = seed_owned(settings, fake_capsule, "tenant-a")

    found = get_connection(cid, settings=settings)

    assert (found["owner"], found["status"], found["refresh_failures"]) == ("tenant-a", "active", 0)
    assert grant["access_token"] not in repr(found)
    with pytest.raises(ConnectionNotFound):
        get_connection("cc_missing", settings=settings)
