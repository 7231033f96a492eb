"""A DynamoDB stream delivered to a function as Lambda's event source mapping would.

``StreamPump.pump()`` reads what is new on every shard of the table's stream and invokes the
function with batches in Lambda's event shape (images with base64 binaries, epoch times,
``eventSourceARN``). It honours partial batch responses: after a reported failure the batch
is retried from the lowest failed sequence number, up to the event source mapping's
MaximumRetryAttempts; then the batch goes to its on-failure queue, as Lambda would send it,
and the shard moves on. (No bisecting: a failing batch is retried whole.)
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3

Invoke = Callable[[dict[str, Any]], Any]


def _lambda_shape(value: Any) -> Any:
    """A record from GetRecords as Lambda passes it: bytes as base64, times as epoch numbers."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, dict):
        return {key: _lambda_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_lambda_shape(item) for item in value]
    return value


@dataclass
class _Shard:
    iterator: str | None
    waiting: list[dict[str, Any]] = field(default_factory=list)  # read, not yet delivered
    attempts: int = 0


@dataclass
class StreamPump:
    stream_arn: str
    invoke: Invoke
    batch_size: int = 100
    maximum_retry_attempts: int = 20
    on_failure_queue_url: str | None = None
    session: boto3.Session = field(default_factory=boto3.Session)
    _shards: dict[str, _Shard] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pump(self) -> int:
        """Deliver everything the stream holds now; return how many records were delivered."""
        with self._lock:
            streams = self.session.client("dynamodbstreams")
            description = streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]
            for shard in description.get("Shards", []):
                if shard["ShardId"] not in self._shards:
                    iterator = streams.get_shard_iterator(
                        StreamArn=self.stream_arn,
                        ShardId=shard["ShardId"],
                        ShardIteratorType="TRIM_HORIZON",
                    )["ShardIterator"]
                    self._shards[shard["ShardId"]] = _Shard(iterator)
            return sum(self._drain(streams, shard) for shard in self._shards.values())

    def _drain(self, streams: Any, shard: _Shard) -> int:
        delivered = 0
        while True:
            if not shard.waiting and shard.iterator is not None:
                page = streams.get_records(ShardIterator=shard.iterator, Limit=self.batch_size)
                shard.iterator = page.get("NextShardIterator")
                shard.waiting = [_lambda_shape(record) for record in page.get("Records", [])]
                for record in shard.waiting:
                    record["eventSourceARN"] = self.stream_arn
            if not shard.waiting:
                return delivered
            batch = shard.waiting[: self.batch_size]
            failed_from = self._deliver(batch)
            if failed_from is None:
                delivered += len(batch)
                shard.waiting = shard.waiting[len(batch) :]
                shard.attempts = 0
                continue
            delivered += failed_from
            shard.waiting = shard.waiting[failed_from:]
            shard.attempts += 1
            if shard.attempts <= self.maximum_retry_attempts:
                return delivered  # retried on the next pump, from the failed record
            self._give_up(shard.waiting[: self.batch_size])
            shard.waiting = shard.waiting[self.batch_size :]
            shard.attempts = 0

    def _deliver(self, batch: list[dict[str, Any]]) -> int | None:
        """Invoke with ``batch``; the index of the first record to retry, or None if done."""
        try:
            result = self.invoke({"Records": batch})
        except Exception:
            return 0  # the whole batch failed: retried whole
        failures = (result or {}).get("batchItemFailures") or []
        failed = {failure.get("itemIdentifier") for failure in failures}
        for index, record in enumerate(batch):
            if record["dynamodb"]["SequenceNumber"] in failed:
                return index
        return None

    def _give_up(self, batch: list[dict[str, Any]]) -> None:
        """What Lambda sends the on-failure destination: where the records are, not them."""
        if not batch or self.on_failure_queue_url is None:
            return
        message = {
            "requestContext": {"condition": "RetryAttemptsExhausted"},
            "DDBStreamBatchInfo": {
                "streamArn": self.stream_arn,
                "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"],
                "batchSize": len(batch),
                "approximateArrivalOfFirstRecord": datetime.now(UTC).isoformat(),
            },
        }
        self.session.client("sqs").send_message(
            QueueUrl=self.on_failure_queue_url, MessageBody=json.dumps(message)
        )


@dataclass
class BusQueue:
    """A queue that an EventBridge rule fills with the connector's status events: what an
    app would set up (README), here to look at what was published."""

    queue_url: str
    session: boto3.Session = field(default_factory=boto3.Session)

    @classmethod
    def create(
        cls, *, bus: str, source: str, name: str, session: boto3.Session | None = None
    ) -> BusQueue:
        session = session or boto3.Session()
        sqs = session.client("sqs")
        queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        events = session.client("events")
        events.put_rule(
            Name=f"{name}-rule", EventBusName=bus, EventPattern=json.dumps({"source": [source]})
        )
        events.put_targets(
            Rule=f"{name}-rule", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}]
        )
        return cls(queue_url, session)

    def drain(self) -> list[dict[str, Any]]:
        """Every event waiting in the queue, oldest first, taken out of it."""
        sqs = self.session.client("sqs")
        found: list[dict[str, Any]] = []
        while True:
            answer = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            messages = answer.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
