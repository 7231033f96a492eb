"""What ties a callback to the browser that started it: random tokens, the nonce cookie and
its hash, and the PKCE challenge.

Start sets a cookie holding a random nonce and stores only its hash with the state; the
callback must bring the same nonce back. The cookie's name carries a hash of the state, so
two tabs signing in at once each keep their own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

# __Secure-: browsers accept the cookie only with Secure, from a secure origin, so nothing
# on a plain-http neighbour can plant or overwrite one.
BINDING_COOKIE = "__Secure-capsule_oauth_binding"

# 32 random bytes = 256 bits, URL-safe base64 without padding = 43 characters.
_TOKEN_BYTES = 32
_TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43,128}$")


def random_token() -> str:
    """A state, nonce or PKCE verifier."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def well_formed(token: str | None) -> bool:
    """Whether ``token`` could be one ``random_token`` made (checked before any lookup)."""
    return bool(token) and _TOKEN_PATTERN.fullmatch(token or "") is not None


def binding_hash(nonce: str) -> str:
    """What the state item stores of the browser's nonce."""
    return hashlib.sha256(nonce.encode()).hexdigest()


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: BASE64URL(SHA256(ASCII(verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def binding_cookie_name(state: str) -> str:
    """One cookie per sign-in, named after its state: two tabs starting at once both finish."""
    return cookie_name_for_digest(hashlib.sha256(state.encode()).hexdigest())


def cookie_name_for_digest(digest: str) -> str:
    """The cookie of the sign-in whose state hashes to ``digest`` (the pages' own links)."""
    return f"{BINDING_COOKIE}_{digest[:16]}"


def _keystream(nonce: str, size: int) -> bytes:
    blocks = (
        hmac.new(nonce.encode(), f"capsule_result:{i}".encode(), hashlib.sha256).digest()
        for i in range(size // 32 + 1)
    )
    return b"".join(blocks)[:size]


def seal_for_browser(nonce: str, value: str) -> str:
    """``value`` hidden under a key only the browser holding ``nonce`` has: stored beside the
    used state, it lets that browser (and no one reading the table) see it again."""
    raw = value.encode()
    return bytes(a ^ b for a, b in zip(raw, _keystream(nonce, len(raw)), strict=True)).hex()


def open_for_browser(nonce: str, sealed: str) -> str:
    raw = bytes.fromhex(sealed)
    return bytes(a ^ b for a, b in zip(raw, _keystream(nonce, len(raw)), strict=True)).decode()


def binding_cookie(state: str, nonce: str, *, path: str, max_age: int) -> str:
    """The Set-Cookie value; an empty nonce and ``max_age=0`` clear it."""
    # Path limited to the callback: the nonce travels only where it is checked.
    return (
        f"{binding_cookie_name(state)}={nonce}; Max-Age={max_age}; Path={path};"
        " HttpOnly; Secure; SameSite=Lax"
    )
