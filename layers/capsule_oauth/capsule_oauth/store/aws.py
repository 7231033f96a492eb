"""Cached boto3 clients: the only place that creates them (tests call ``reset()``)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_kms import KMSClient

# Fail fast and let the caller decide; Lambda's own retries would stretch a request past
# API Gateway's 30 s limit.
_CONFIG = Config(
    connect_timeout=3,
    read_timeout=5,
    retries={"max_attempts": 3, "mode": "standard"},
    parameter_validation=False,
)


@functools.cache
def dynamodb() -> DynamoDBClient:
    return boto3.client("dynamodb", config=_CONFIG)


@functools.cache
def kms() -> KMSClient:
    return boto3.client("kms", config=_CONFIG)


@functools.cache
def events() -> EventBridgeClient:
    return boto3.client("events", config=_CONFIG)


def reset() -> None:
    dynamodb.cache_clear()
    kms.cache_clear()
    events.cache_clear()
