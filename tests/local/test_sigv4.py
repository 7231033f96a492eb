"""The local gateway's SigV4 check accepts what AWS SDKs sign and refuses everything else."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local import sigv4

KNOWN = sigv4.KnownCredentials("AKIALOCAL", "local-secret")
REGION = "us-east-1"
URL = "http://127.0.0.1:3000/connect-sessions?b=2&a=1&a=0"
BODY = json.dumps({"owner": "user-42"}).encode()


def signed(
    url: str = URL,
    body: bytes = BODY,
    secret: str = KNOWN.secret_key,
    region: str = REGION,
    service: str = "execute-api",
) -> dict[str, str]:
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(KNOWN.access_key, secret), service, region).add_auth(request)
    return dict(request.headers.items())


def check(headers: dict[str, str], url: str = URL, body: bytes = BODY) -> sigv4.Caller:
    parts = urlsplit(url)
    return sigv4.verify(
        method="POST",
        path=parts.path,
        raw_query=parts.query,
        headers={"Host": parts.netloc, **headers},
        body=body,
        known=KNOWN,
        region=REGION,
    )


def test_a_request_botocore_signed_is_accepted_and_names_its_caller() -> None:
    caller = check(signed())

    assert caller.access_key == "AKIALOCAL"
    assert caller.user_arn == "arn:aws:iam::123456789012:user/local-developer"


@pytest.mark.parametrize(
    ("headers", "url", "body"),
    [
        pytest.param({}, URL, BODY, id="unsigned"),
        pytest.param(signed(secret="wrong"), URL, BODY, id="wrong secret"),
        pytest.param(signed(region="eu-west-1"), URL, BODY, id="other region"),
        pytest.param(signed(service="lambda"), URL, BODY, id="other service"),
        pytest.param(signed(), URL, b'{"owner": "someone-else"}', id="body changed"),
        pytest.param(signed(), URL.replace("b=2", "b=3"), BODY, id="query changed"),
        pytest.param(signed(), URL.replace("/connect-sessions", "/connections"), BODY, id="path"),
        pytest.param({"Authorization": "Bearer abc"}, URL, BODY, id="not sigv4"),
    ],
)
def test_anything_else_is_refused(headers: dict[str, str], url: str, body: bytes) -> None:
    with pytest.raises(sigv4.SignatureRejected):
        check(headers, url, body)


def test_an_old_signature_is_refused() -> None:
    headers = signed()
    parts = urlsplit(URL)
    with pytest.raises(sigv4.SignatureRejected, match="expired"):
        sigv4.verify(
            method="POST",
            path=parts.path,
            raw_query=parts.query,
            headers={"Host": parts.netloc, **headers},
            body=BODY,
            known=KNOWN,
            region=REGION,
            now=9_999_999_999,
        )


def test_the_secret_never_shows_in_a_repr() -> None:
    assert "local-secret" not in repr(KNOWN)


def _signed_with_payload_hash(claimed: str, body: bytes = BODY) -> dict[str, str]:
    """Signed as a client does that sends X-Amz-Content-Sha256 (S3-style signers do)."""
    request = AWSRequest(
        method="POST",
        url=URL,
        data=body,
        headers={"Content-Type": "application/json", "X-Amz-Content-Sha256": claimed},
    )
    SigV4Auth(Credentials(KNOWN.access_key, KNOWN.secret_key), "execute-api", REGION).add_auth(
        request
    )
    return dict(request.headers.items())


def test_a_signed_content_hash_of_the_real_body_is_accepted() -> None:
    headers = _signed_with_payload_hash(hashlib.sha256(BODY).hexdigest())

    assert check(headers).access_key == "AKIALOCAL"


def test_a_captured_request_replayed_with_another_body_is_refused() -> None:
    # The signature covers the claimed hash, not the body: the body must be hashed itself.
    headers = _signed_with_payload_hash(hashlib.sha256(BODY).hexdigest())
    other = b'{"owner": "someone-else"}'

    with pytest.raises(sigv4.SignatureRejected, match="does not match the request body"):
        check(headers, body=other)


def test_an_unsigned_payload_is_refused() -> None:
    headers = _signed_with_payload_hash("UNSIGNED-PAYLOAD")

    with pytest.raises(sigv4.SignatureRejected, match="UNSIGNED-PAYLOAD is refused"):
        check(headers)


@pytest.mark.parametrize(
    ("sign", "says"),
    [
        pytest.param(dict, "not signed", id="unsigned"),
        pytest.param(lambda: signed(secret="wrong"), "signature does not match", id="secret"),
        pytest.param(lambda: signed(region="eu-west-1"), "signed for eu-west-1/", id="region"),
        pytest.param(lambda: signed(service="s3"), "signed for us-east-1/s3", id="service"),
    ],
)
def test_a_refusal_gives_the_developer_its_reason_without_the_signature(
    sign: Callable[[], dict[str, str]], says: str
) -> None:
    headers = sign()  # signed now: a signature made at collection may be too old by now
    with pytest.raises(sigv4.SignatureRejected) as refused:
        check(headers)

    assert says in refused.value.reason
    given = headers.get("Authorization", "").rpartition("Signature=")[2]
    assert not given or given not in refused.value.reason
    assert KNOWN.secret_key not in refused.value.reason


def test_a_refused_access_key_is_named_with_the_one_accepted() -> None:
    headers = signed()
    headers["Authorization"] = headers["Authorization"].replace("AKIALOCAL", "AKIAOTHER")

    with pytest.raises(sigv4.SignatureRejected) as refused:
        check(headers)

    assert refused.value.reason == (
        "signed with access key 'AKIAOTHER', not with this stack's 'AKIALOCAL'"
    )
