"""``make local`` in this process: what it promises about the AWS it runs on."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto.dynamodb import models as dynamodb_models

from local import deployment
from local.deployment import LocalDeployment, Ports
from local.stack import REGION


@pytest.fixture
def local_stack() -> Iterator[LocalDeployment]:
    environment = dict(os.environ)
    deployment = LocalDeployment(
        ports=Ports.any_free(), schedule=False, write_state_file=False, quiet=True
    )
    try:
        yield deployment.start()
    finally:
        deployment.stop()
        os.environ.clear()
        os.environ.update(environment)


def test_two_callers_never_both_pass_one_conditional_write(
    local_stack: LocalDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Widen the gap between moto reading the item and writing it, where a second caller
    # could slip in: DynamoDB has no such gap, and make local must not either.
    name = "create_condition_expression_parser"  # moto reads the item, then checks, then writes
    original: Callable[..., Any] = getattr(dynamodb_models, name)

    def slow_parser(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)
        return original(*args, **kwargs)

    monkeypatch.setattr(dynamodb_models, name, slow_parser)
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=local_stack.aws_endpoint)
    table = local_stack.created.connections_table
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def take_lease(owner: str) -> None:
        start.wait()
        try:
            dynamodb.update_item(
                TableName=table,
                Key={"connection_id": {"S": "race"}},
                UpdateExpression="SET lease_owner = :owner",
                ConditionExpression="attribute_not_exists(lease_owner)",
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
            outcomes.append("leased")
        except dynamodb.exceptions.ConditionalCheckFailedException:
            outcomes.append("refused")

    threads = [threading.Thread(target=take_lease, args=(who,)) for who in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["leased", "refused"]


class _Writes(io.StringIO):
    """A stdout that keeps each write() apart, as the terminal receives them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return len(text)


def test_a_request_line_reaches_the_terminal_in_one_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two requests answered at once (a landing form and the route it calls) print from two
    # threads; a line written in pieces could be split by the other's.
    terminal = _Writes()
    monkeypatch.setattr(sys, "stdout", terminal)

    deployment._print_line("14:41:25  POST   /connect-sessions  201  13 ms  SessionsFunction")

    assert terminal.calls == ["14:41:25  POST   /connect-sessions  201  13 ms  SessionsFunction\n"]
