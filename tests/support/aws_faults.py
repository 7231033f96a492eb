"""AWS answering with a fault (throttling, an outage) for the connector's own clients.

The fault answers before the request leaves botocore (a ``before-call`` hook), so boto3's
retries do not stretch a test, and only the clients of ``capsule_oauth.store.aws`` see it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from capsule_oauth.store import aws

WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"})


@dataclass
class _Response:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Faults:
    """The operations that were answered with the fault, in order."""

    answered: list[str] = field(default_factory=list)


@contextlib.contextmanager
def aws_fault(
    service: str = "dynamodb",
    operations: frozenset[str] | None = None,
    *,
    code: str = "ThrottlingException",
    status: int = 400,
) -> Iterator[Faults]:
    """Answer ``operations`` of ``service`` ("dynamodb", "kms") (all when None) with ``code``."""
    client = getattr(aws, service)()
    faults = Faults()

    def answer(model: Any, **_: Any) -> tuple[_Response, dict[str, Any]] | None:
        if operations is not None and model.name not in operations:
            return None
        faults.answered.append(model.name)
        error = {"Error": {"Code": code, "Message": "Injected fault"}, "ResponseMetadata": {}}
        return _Response(status), error

    event = f"before-call.{client.meta.service_model.service_id.hyphenize()}"
    client.meta.events.register(event, answer, unique_id="test-aws-fault")
    try:
        yield faults
    finally:
        client.meta.events.unregister(event, unique_id="test-aws-fault")
