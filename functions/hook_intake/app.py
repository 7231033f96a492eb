"""POST /capsule-hooks/{hook_token}: a Capsule REST hook delivery, published as events.

No IAM (Capsule cannot sign): the unguessable token in the path is the credential, so the
path is never logged, here or in the API's access log (route keys only). Answers carry the
status and nothing else.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import BotoCoreError, ClientError

from capsule_oauth.config import settings
from capsule_oauth.errors import ConfigError
from capsule_oauth.flows import hook_intake
from capsule_oauth.observability import count_by, logger, metrics

_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _answer(status: int) -> dict[str, Any]:
    return {"statusCode": status, "headers": dict(_HEADERS), "body": "", "isBase64Encoded": False}


def _body(event: dict[str, Any]) -> bytes | None:
    raw = event.get("body") or ""
    if not isinstance(raw, str):
        return None
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None
    try:
        return raw.encode("utf-8")
    except UnicodeEncodeError:
        return None


def intake(event: dict[str, Any]) -> dict[str, Any]:
    try:
        parameters = event.get("pathParameters") if isinstance(event, dict) else None
        token = parameters.get("hook_token") if isinstance(parameters, dict) else None
        body = _body(event) if isinstance(event, dict) else None
        if body is None:
            body = b"\x00"  # not JSON: a 400 once the token is known
        return _answer(
            hook_intake.receive(settings(), token if isinstance(token, str) else None, body)
        )
    except ConfigError as error:
        logger.error("Connector is not configured", extra={"problem": str(error)})
        count_by("CapsuleHookDeliveries", "outcome", hook_intake.FAILED)
        return _answer(503)
    except (ClientError, BotoCoreError) as fault:  # AWS throttled or out: Capsule retries
        logger.warning("AWS fault", extra={"error": type(fault).__name__})
        count_by("CapsuleHookDeliveries", "outcome", hook_intake.FAILED)
        answer = _answer(503)
        answer["headers"]["Retry-After"] = "5"
        return answer
    except Exception as error:  # Capsule retries a 5xx: nothing is lost
        logger.error("Hook intake crashed", extra={"error": type(error).__name__})
        count_by("CapsuleHookDeliveries", "outcome", hook_intake.FAILED)
        return _answer(500)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return intake(event)
