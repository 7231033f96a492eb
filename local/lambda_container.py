"""What the tests, the bench and the local stack share about running the handlers here.

A Lambda container keeps module-level caches between invocations (clients, settings, the
client secret, decrypted tokens); ``reset_caches`` gives a new, cold container.
``atomic_dynamodb`` makes moto's single-request writes atomic across threads, as
DynamoDB's are.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

# The operations a racing test or bench sends concurrently. moto evaluates a condition and
# applies a write in separate steps, and pages a Query while other threads move items.
_ATOMIC = (
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "query",
    "scan",
    "batch_write_item",
)


def reset_caches() -> None:
    """What a new Lambda container starts with: no clients, settings, secret or tokens."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import base as parameter_providers

    from capsule_oauth import config, tokens
    from capsule_oauth.capsule import api
    from capsule_oauth.observability import metrics
    from capsule_oauth.store import aws

    aws.reset()
    config.settings.cache_clear()
    api.session.cache_clear()
    tokens.clear_cache()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
    # Providers hold boto3 clients bound to the mock they were made under.
    parameter_providers.DEFAULT_PROVIDERS.clear()  # type: ignore[attr-defined]
    metrics.clear_metrics()


@contextlib.contextmanager
def atomic_dynamodb() -> Iterator[None]:
    """One DynamoDB request at a time inside moto, as DynamoDB applies each one atomically.

    Without it, racing threads can both pass a condition (two lease holders) or a paged
    Query can return an item twice; real DynamoDB does neither. moto runs under the GIL
    anyway, so the lock costs no parallelism.
    """
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    originals: dict[str, Callable[..., Any]] = {
        name: vars(DynamoDBBackend)[name] for name in _ATOMIC
    }

    def locked(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return original(*args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(DynamoDBBackend, name, locked(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(DynamoDBBackend, name, original)
