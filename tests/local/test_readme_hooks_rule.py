"""The README's EventBridge rule for `Capsule Record Changed`, set up on moto as written: of
the events the hook intake publishes for a delivery, only the party changes reach the queue,
and no status event does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import yaml
from moto import mock_aws

from capsule_oauth.config import Settings
from capsule_oauth.flows import hook_intake
from capsule_oauth.status_events import DETAIL_TYPES
from capsule_oauth.store.records import Connection
from local.stack import Template, _CloudFormationLoader

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_rule() -> dict[str, Any]:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- example: record-changed-rule .*?-->\n```yaml\n(.*?)```", text, re.S)
    assert match, "README has no example 'record-changed-rule'"
    resources: dict[str, Any] = yaml.load(match.group(1), Loader=_CloudFormationLoader)  # noqa: S506
    return resources


def test_the_readme_rule_sends_only_party_changes_to_the_apps_queue(template: Template) -> None:
    rule = readme_rule()["PartyChangesRule"]["Properties"]
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["PartyChangesQueue", "Arn"]}
    defaults = template.parameter_defaults()
    settings = Settings("s", "c", "k", "x", event_bus_name=defaults["EventBusName"],
                        event_source=defaults["EventSource"])  # fmt: skip
    connection = Connection("cc_1", "active", 1, 0, b"", subdomain="exampleco", owner="user-42")
    deliveries = [
        hook_intake.Delivery("party/created", [{"id": 1, "updatedAt": "2026-11-28T09:00:00Z"}]),
        hook_intake.Delivery("task/completed", [{"id": 2, "updatedAt": "2026-11-28T09:00:00Z"}]),
    ]
    entries = [
        e for d in deliveries for e in hook_intake.entries(settings, connection, d, received_at=0)
    ]

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="PartyChangesQueue")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        events = boto3.client("events", region_name="us-east-1")
        events.put_rule(
            Name="PartyChangesRule",
            EventBusName=rule["EventBusName"],
            EventPattern=json.dumps(rule["EventPattern"]),
        )
        events.put_targets(
            Rule="PartyChangesRule",
            EventBusName=rule["EventBusName"],
            Targets=[{"Id": "app-queue", "Arn": arn["Attributes"]["QueueArn"]}],
        )
        events.put_events(Entries=entries)
        for detail_type in DETAIL_TYPES:  # status events: not for this rule
            events.put_events(
                Entries=[
                    {
                        "EventBusName": defaults["EventBusName"],
                        "Source": defaults["EventSource"],
                        "DetailType": detail_type,
                        "Detail": json.dumps({"connection_id": "cc_1", "version": 2}),
                    }
                ]
            )
        received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]

    bodies = [json.loads(m["Body"]) for m in received]
    assert [(b["detail-type"], b["detail"]["event"]) for b in bodies] == [
        ("Capsule Record Changed", "party/created")
    ]
