"""Owner ids: the app's own, validated; connection ids derived from owner, site and user."""

from __future__ import annotations

import pytest

from capsule_oauth import owners


@pytest.mark.parametrize(
    "owner", ["user-42", "tenant:acme/user@example.com", "a", "A" * 128, "x.y_z+1"]
)
def test_owners_of_the_documented_form_are_valid(owner: str) -> None:
    assert owners.is_valid(owner)


@pytest.mark.parametrize(
    "owner", ["", "-lead", "_lead", "A" * 129, "has space", "a\nb", "ünï", "a;b", None, 42]
)
def test_anything_else_is_not(owner: object) -> None:
    assert not owners.is_valid(owner)


def test_the_same_owner_site_and_user_is_always_the_same_connection() -> None:
    assert owners.connection_id_for("user-42", "ExampleCo", "1") == owners.connection_id_for(
        "user-42", "exampleco", "1"
    )


def test_two_owners_of_the_same_capsule_user_get_two_connections() -> None:
    first = owners.connection_id_for("user-42", "exampleco", "1")
    second = owners.connection_id_for("user-43", "exampleco", "1")

    assert first != second
    assert "user-42" not in first
    assert first.startswith("cc_")


def test_anonymous_connections_keep_the_ids_they_had_before_owners() -> None:
    assert owners.connection_id_for(owners.ANONYMOUS, "ExampleCo", "1") == "exampleco:1"
