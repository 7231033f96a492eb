"""The README's EventBridge rule for `Connection Needs Reauth`, set up on moto as written:
of every status event EventsFunction can publish, only that one reaches the app's queue."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import yaml
from moto import mock_aws

from capsule_oauth.status_events import DETAIL_TYPES, NEEDS_REAUTH_EVENT
from local.stack import Template, _CloudFormationLoader

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_rule() -> dict[str, Any]:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- example: needs-reauth-rule .*?-->\n```yaml\n(.*?)```", text, re.S)
    assert match, "README has no example 'needs-reauth-rule'"
    resources: dict[str, Any] = yaml.load(match.group(1), Loader=_CloudFormationLoader)  # noqa: S506
    return resources


def test_the_readme_rule_sends_only_needs_reauth_to_the_apps_queue(template: Template) -> None:
    resources = readme_rule()
    rule = resources["NeedsReauthRule"]["Properties"]
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["NeedsReauthQueue", "Arn"]}
    defaults = template.parameter_defaults()

    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue = sqs.create_queue(QueueName="NeedsReauthQueue")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        events = boto3.client("events", region_name="us-east-1")
        events.put_rule(
            Name="NeedsReauthRule",
            EventBusName=rule["EventBusName"],
            EventPattern=json.dumps(rule["EventPattern"]),
        )
        events.put_targets(
            Rule="NeedsReauthRule",
            EventBusName=rule["EventBusName"],
            Targets=[{"Id": "app-queue", "Arn": arn["Attributes"]["QueueArn"]}],
        )
        for detail_type in DETAIL_TYPES:  # what the template's defaults publish
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

    assert [json.loads(m["Body"])["detail-type"] for m in received] == [NEEDS_REAUTH_EVENT]
