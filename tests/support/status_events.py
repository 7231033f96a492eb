"""Status events end to end on moto: the table's stream pumped into EventsFunction as Lambda
would, and the bus routed to a queue the test reads, as an app's rule would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from local import lambda_container
from local.stack import Stack, Template
from local.streams import BusQueue, StreamPump


@dataclass
class StatusEvents:
    pump: StreamPump
    bus: BusQueue

    @classmethod
    def wire(cls, template: Template, stack: Stack) -> StatusEvents:
        environment = stack.environment("EventsFunction")
        bus = BusQueue.create(
            bus=environment["EVENT_BUS_NAME"],
            source=environment["EVENT_SOURCE"],
            name="app-status-events",
        )
        pump = StreamPump(
            stack.physical["ConnectionsTable.StreamArn"],
            lambda event: lambda_container.invoke(template, "EventsFunction", event),
            on_failure_queue_url=stack.physical["StatusEventFailuresQueue"],
        )
        pump.pump()  # what is in the stream already is not this test's
        bus.drain()
        return cls(pump, bus)

    def published(self) -> list[dict[str, Any]]:
        """Deliver the stream's new records; the events that reached the app's queue."""
        self.pump.pump()
        return self.bus.drain()

    def kinds(self) -> list[tuple[str, str, int]]:
        """(detail-type, connection id, version) of each new event, in order."""
        return [
            (e["detail-type"], e["detail"]["connection_id"], e["detail"]["version"])
            for e in self.published()
        ]
