"""Where a person may be sent back to: the app's own origins, or a path on this API.

Checked once, when the app creates a connect session; a URL that passes is stored with the
session and used as is after the callback. Origins compare as browsers compare them: scheme,
host (case-insensitive) and port, with :443 the same as no port for https.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlencode, urlsplit, urlunsplit

MAX_RETURN_URL = 2048

Origin = tuple[str, str, int]  # scheme, lower-case host, port


class InvalidReturnUrl(ValueError):
    """The return URL cannot be used; the message says why (it is shown to the app)."""


def _bracketed_host_is_ipv6(netloc: str) -> bool:
    """A host in brackets must be an IPv6 literal (urlsplit lets ``[app.example.com]`` by)."""
    host = netloc.rpartition("@")[2]
    if "[" not in host and "]" not in host:
        return True
    if not host.startswith("[") or "]" not in host:
        return False
    try:
        ipaddress.IPv6Address(host[1 : host.index("]")])
    except ValueError:
        return False
    return True


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) of an absolute http(s) URL, or None when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        return None
    if not _bracketed_host_is_ipv6(parts.netloc):
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port or default


def parse_allowed_origins(raw: str) -> tuple[Origin, ...]:
    """ALLOWED_RETURN_ORIGINS: comma-separated ``https://host[:port]``; ValueError says which."""
    origins = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        parts = urlsplit(entry)
        origin = origin_of(entry)
        if (
            origin is None
            or origin[0] != "https"
            or parts.username is not None
            or parts.password is not None
            or parts.path not in {"", "/"}
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"{entry!r} is not an origin of the form https://host[:port]")
        origins.append(origin)
    return tuple(origins)


def check_return_url(url: str, allowed: tuple[Origin, ...]) -> str:
    """``url`` itself when a person may be sent there, else InvalidReturnUrl saying why."""
    if len(url) > MAX_RETURN_URL:
        raise InvalidReturnUrl(f"return_url is longer than {MAX_RETURN_URL} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or "\\" in url:
        raise InvalidReturnUrl("return_url contains spaces, control characters or backslashes")
    if "#" in url:
        raise InvalidReturnUrl("return_url must not have a fragment (#...)")
    if url.startswith("/") and not url.startswith("//"):
        return url  # a path on this API
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed bracket in the host, for one
        raise InvalidReturnUrl("return_url is not a valid URL") from None
    if "@" in parts.netloc:
        raise InvalidReturnUrl("return_url must not carry a user name or password")
    origin = origin_of(url)
    if origin is None:
        raise InvalidReturnUrl("return_url must be an https:// URL or a path on this API (/...)")
    if origin not in allowed:
        scheme, host, port = origin
        default = 443 if scheme == "https" else 80
        shown = f"{scheme}://{host}" + ("" if port == default else f":{port}")
        raise InvalidReturnUrl(
            f"return_url's origin {shown} is not in AllowedReturnOrigins; add it to the"
            " stack parameter or use one of the origins listed there"
        )
    return url


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its own query (which is kept)."""
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
