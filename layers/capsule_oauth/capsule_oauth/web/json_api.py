"""JSON answers for the routes the app's backend calls (AWS_IAM): never cached, errors alike."""

from __future__ import annotations

import json
from typing import Any

_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def answer(status: int, body: object | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": dict(_HEADERS),
        "body": "" if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def error(status: int, code: str, message: str) -> dict[str, Any]:
    return answer(status, {"error": code, "message": message})


def caller(event: dict[str, Any]) -> str | None:
    """The IAM identity API Gateway verified (AWS_IAM routes), for the log."""
    iam = event.get("requestContext", {}).get("authorizer", {}).get("iam", {})
    arn = iam.get("userArn") if isinstance(iam, dict) else None
    return arn if isinstance(arn, str) else None
