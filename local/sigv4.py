"""Check an AWS Signature Version 4 as API Gateway does for a route authorised with AWS_IAM.

The local gateway serves the template's IAM routes only to requests signed for
``execute-api`` with credentials it knows (the local stack's); anything else gets the 403
API Gateway would answer. The body is always hashed as received: a claimed
``X-Amz-Content-Sha256`` must match it and ``UNSIGNED-PAYLOAD`` is refused, so a captured
request cannot be replayed with another body. Built from the published algorithm with the
standard library, so a client that signs with botocore, curl ``--aws-sigv4`` or any other
SDK is checked the same.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "execute-api"
MAX_SKEW_SECONDS = 300

_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


class SignatureRejected(Exception):
    """The request is not signed, or not signed right; ``message`` is API Gateway's answer
    to the caller, ``reason`` what the developer reads in the terminal (the message where it
    says enough). Neither ever holds the signature or a secret."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or message


@dataclass(frozen=True)
class Caller:
    """Who signed: what API Gateway puts in ``requestContext.authorizer.iam``."""

    access_key: str
    account_id: str
    user_arn: str
    user_id: str


@dataclass(frozen=True)
class KnownCredentials:
    access_key: str
    secret_key: str = field(repr=False)
    account_id: str = "123456789012"
    user_name: str = "local-developer"

    def caller(self) -> Caller:
        return Caller(
            access_key=self.access_key,
            account_id=self.account_id,
            user_arn=f"arn:aws:iam::{self.account_id}:user/{self.user_name}",
            user_id=self.access_key,
        )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _canonical_query(raw_query: str) -> str:
    # Split by hand: parse_qsl would read "+" as a space, which SigV4 does not.
    pairs = [pair.partition("=")[::2] for pair in raw_query.split("&") if pair]
    pairs = [(unquote(name), unquote(value)) for name, value in pairs]
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _canonical_path(path: str) -> str:
    # Not S3: each segment is encoded again, as botocore signs and API Gateway checks.
    return quote(path or "/", safe="/~-_.")


def signature(
    secret_key: str,
    *,
    method: str,
    path: str,
    raw_query: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    body: bytes,
    amz_date: str,
    scope: str,
) -> str:
    """The signature a correct client computes for this request (hex)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    canonical_headers = "".join(
        f"{name}:{' '.join(lowered.get(name, '').split())}\n" for name in signed_headers
    )
    payload_hash = hashlib.sha256(body).hexdigest()  # the body received, never a claim about it
    canonical_request = "\n".join(
        [
            method.upper(),
            _canonical_path(path),
            _canonical_query(raw_query),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    date, region, service, terminator = scope.split("/")
    key = _hmac(f"AWS4{secret_key}".encode(), date)
    for part in (region, service, terminator):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def verify(
    *,
    method: str,
    path: str,
    raw_query: str,
    headers: Mapping[str, str],
    body: bytes,
    known: KnownCredentials,
    region: str,
    now: float | None = None,
) -> Caller:
    """The caller, or SignatureRejected with the message API Gateway would send."""
    lowered = {name.lower(): value for name, value in headers.items()}
    authorization = lowered.get("authorization", "")
    if not authorization:
        raise SignatureRejected("Forbidden", "not signed: no Authorization header")
    match = _AUTHORIZATION.match(authorization.strip())
    if not match:
        raise SignatureRejected(
            "Authorization header requires a valid AWS4-HMAC-SHA256 form.",
            "the Authorization header is not an AWS4-HMAC-SHA256 signature",
        )
    access_key, _, scope = match["credential"].partition("/")
    signed_headers = match["signed"].split(";")
    amz_date = lowered.get("x-amz-date", "")
    if access_key != known.access_key:
        raise SignatureRejected(
            "The security token included in the request is invalid.",
            f"signed with access key {access_key!r}, not with this stack's {known.access_key!r}",
        )
    if "host" not in signed_headers:
        raise SignatureRejected("The host header must be signed.")
    if scope.count("/") != 3 or scope.split("/")[1:] != [region, SERVICE, "aws4_request"]:
        raise SignatureRejected(
            f"Credential should be scoped to {region}/{SERVICE}.",
            f"signed for {'/'.join(scope.split('/')[1:3]) or 'no region'},"
            f" not for {region}/{SERVICE}",
        )
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureRejected("The request must carry a valid X-Amz-Date.") from None
    if scope.split("/")[0] != amz_date[:8]:
        raise SignatureRejected("Credential date does not match X-Amz-Date.")
    current = time.time() if now is None else now
    if abs(current - signed_at.timestamp()) > MAX_SKEW_SECONDS:
        raise SignatureRejected(
            "Signature expired.", f"signed at {amz_date}, more than {MAX_SKEW_SECONDS} s from now"
        )
    claimed = lowered.get("x-amz-content-sha256")
    if claimed is not None and claimed.strip().lower() != hashlib.sha256(body).hexdigest():
        if claimed.strip().upper().startswith(("UNSIGNED-PAYLOAD", "STREAMING-")):
            raise SignatureRejected("The request body must be signed: UNSIGNED-PAYLOAD is refused.")
        raise SignatureRejected("X-Amz-Content-Sha256 does not match the request body.")
    expected = signature(
        known.secret_key,
        method=method,
        path=path,
        raw_query=raw_query,
        headers=headers,
        signed_headers=signed_headers,
        body=body,
        amz_date=amz_date,
        scope=scope,
    )
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureRejected(
            "The request signature we calculated does not match the signature you provided.",
            "the signature does not match: signed with another secret key, or the request"
            " changed after it was signed",
        )
    return known.caller()
