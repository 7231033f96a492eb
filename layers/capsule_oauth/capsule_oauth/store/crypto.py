"""KMS envelope for a connection's tokens: one Encrypt / Decrypt for both tokens.

The encryption context binds a ciphertext to its connection id: a blob copied onto another
connection's item does not decrypt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from capsule_oauth.errors import TokenDecryptionError
from capsule_oauth.store import aws


@dataclass(frozen=True)
class TokenPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)


def _context(connection_id: str) -> dict[str, str]:
    return {"connection_id": connection_id}


def seal(key_id: str, connection_id: str, tokens: TokenPair) -> bytes:
    plaintext = json.dumps(
        {"access_token": tokens.access_token, "refresh_token": tokens.refresh_token}
    ).encode()
    response = aws.kms().encrypt(
        KeyId=key_id, Plaintext=plaintext, EncryptionContext=_context(connection_id)
    )
    return response["CiphertextBlob"]


def unseal(key_id: str, connection_id: str, blob: bytes) -> TokenPair:
    kms = aws.kms()
    try:
        response = kms.decrypt(
            KeyId=key_id, CiphertextBlob=blob, EncryptionContext=_context(connection_id)
        )
    except kms.exceptions.InvalidCiphertextException:
        raise TokenDecryptionError(
            f"tokens of connection {connection_id} do not decrypt with their encryption context"
        ) from None
    value = json.loads(response["Plaintext"])
    return TokenPair(value["access_token"], value["refresh_token"])
