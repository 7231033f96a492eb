"""ConnectionsTable stream: publish each status transition of a connection to EventBridge.

Partial batch responses (Powertools): a record whose event could not be put, or that could
not be understood, is reported failed, and Lambda retries from it (bisecting, then to the
on-failure queue); the records before it are done, and every other record's event is still
published. Records with no transition succeed at once.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from capsule_oauth import status_events
from capsule_oauth.config import settings
from capsule_oauth.observability import count, logger, metrics
from capsule_oauth.store import aws

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


class EventNotPublished(Exception):
    """This record's status event was not put on the bus (or an earlier one of its
    connection's in this batch was not, or the record could not be understood): the stream
    retries it."""


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    configured = settings()
    derived = status_events.derive(event.get("Records") or [], configured.refresh_failing_threshold)
    failed = status_events.publish(
        aws.events(), derived.events, bus=configured.event_bus_name, source=configured.event_source
    )
    if published := len(derived.events) - len(failed):
        count("StatusEventPublished", published)
    if failed:
        count("StatusEventFailed", len(failed))
    if derived.unreadable:
        count("StatusEventUnreadable", len(derived.unreadable))
        failed |= derived.unreadable

    def record_handler(record: DynamoDBRecord) -> None:
        if record.dynamodb is not None and record.dynamodb.sequence_number in failed:
            raise EventNotPublished(record.dynamodb.sequence_number)

    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
