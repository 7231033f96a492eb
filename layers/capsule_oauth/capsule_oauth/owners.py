"""Owners: the integrating app's own id for whoever a connection belongs to.

Every connection has exactly one owner. Its id is derived from (owner, Capsule site, Capsule
user), so the same owner connecting the same Capsule user again updates that connection in
place, and two owners connecting the same Capsule user get two connections.
"""

from __future__ import annotations

import hashlib
import re

ANONYMOUS = "anonymous"  # sign-ins without a connect session, and connections from before owners
PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}$")
RULE = (
    "owner must be 1-128 characters: letters, digits and . _ : @ / + -, starting with a letter"
    " or digit"
)


def is_valid(owner: object) -> bool:
    return isinstance(owner, str) and PATTERN.fullmatch(owner) is not None


# Connection ids are "<subdomain>:<user id>" or "cc_<hex>"; anything else is not one.
CONNECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,255}$")


def is_connection_id(value: object) -> bool:
    """Whether ``value`` could name a connection (checked before any lookup)."""
    return isinstance(value, str) and CONNECTION_ID.fullmatch(value) is not None


def connection_id_for(owner: str, subdomain: str, user_id: str) -> str:
    """The connection of ``owner`` for one Capsule user on one Capsule site.

    Anonymous connections keep the id they had before owners existed, so a deployment that
    upgrades keeps updating the same items. Others get an opaque id: an owner's own id never
    shows in a URL or a log line through it.
    """
    if owner == ANONYMOUS:
        return f"{subdomain.lower()}:{user_id}"
    digest = hashlib.sha256(f"{owner}\n{subdomain.lower()}\n{user_id}".encode()).hexdigest()
    return f"cc_{digest[:32]}"
