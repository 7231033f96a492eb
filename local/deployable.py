"""Prove template.yaml deploys: apply the SAM transform offline and find no dependency cycle.

CloudFormation refuses a stack whose resources depend on each other in a circle (for example
a function whose environment names the HttpApi that routes to it), and neither
``sam validate --lint`` nor cfn-lint sees it, because the cycle only exists after the SAM
transform has turned functions, routes and permissions into plain resources.

    python -m local.deployable [template.yaml]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from local.stack import ACCOUNT, REGION, TEMPLATE_PATH, Template

_PSEUDO = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "capsule-connector",
    "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/capsule-connector/0",
    "AWS::NotificationARNs": [],
}


def transformed(template: Template) -> dict[str, Any]:
    """The template as CloudFormation receives it after AWS::Serverless-2016-10-31."""
    body = json.loads(json.dumps(template.body))  # a deep copy the transform may change
    # Code locations as `sam package` leaves them: the transform accepts only S3 URIs.
    for name, resource in body["Resources"].items():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                properties[key] = f"s3://artifacts/{name}.zip"
    parameters = {**_PSEUDO, **template.parameter_defaults()}
    # A session with a region and no credentials: the transform reads only its region, and
    # asks for AWS managed policies by name, which this template never uses.
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=REGION))
    result: dict[str, Any] = translator.translate(
        body, parameter_values=parameters, get_managed_policy_map=dict
    )
    return result


def _references(value: Any) -> Iterator[str]:
    """Every logical id a piece of a resource refers to (Ref, GetAtt, Sub)."""
    if isinstance(value, list):
        for item in value:
            yield from _references(item)
        return
    if not isinstance(value, dict):
        return
    for key, inner in value.items():
        if key == "Ref" and isinstance(inner, str):
            yield inner
        elif key == "Fn::GetAtt":
            target = inner.split(".", 1)[0] if isinstance(inner, str) else inner[0]
            yield str(target)
        elif key == "Fn::Sub":
            text = inner if isinstance(inner, str) else inner[0]
            for part in str(text).split("${")[1:]:
                name = part.split("}", 1)[0]
                if not name.startswith("!"):
                    yield name.split(".", 1)[0]
            if isinstance(inner, list) and len(inner) > 1:
                yield from _references(inner[1])
        else:
            yield from _references(inner)


def dependencies(resources: dict[str, Any]) -> dict[str, set[str]]:
    """Resource -> the resources it needs first (references and DependsOn)."""
    graph: dict[str, set[str]] = {}
    for name, resource in resources.items():
        needs = {ref for ref in _references(resource.get("Properties", {})) if ref in resources}
        depends_on = resource.get("DependsOn", [])
        needs |= {depends_on} if isinstance(depends_on, str) else set(depends_on)
        graph[name] = needs
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One dependency cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for needed in sorted(graph.get(node, ())):
            if needed in on_path:
                return [*path[path.index(needed) :], needed]
            if needed not in done and (cycle := visit(needed)):
                return cycle
        on_path.discard(node)
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done and (cycle := visit(node)):
            return cycle
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else TEMPLATE_PATH
    resources = transformed(Template.load(path))["Resources"]
    cycle = find_cycle(dependencies(resources))
    if cycle:
        print(f"{path.name}: circular dependency after the SAM transform: {' -> '.join(cycle)}")
        print("CloudFormation would refuse to deploy it; break one reference of that circle.")
        return 1
    print(f"{path.name}: deployable ({len(resources)} resources after the SAM transform, no cycle)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
