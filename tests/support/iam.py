"""IAM as the least-privilege check needs it: the roles CloudFormation receives after the SAM
transform, each AWS call as IAM authorises it, and whether a role allows a call.

A ``Call`` is what IAM evaluates: the action, the resource's ARN and the condition keys the
request carries (``dynamodb:LeadingKeys``, ``kms:EncryptionContext:…``). ``calls_of`` turns a
boto3 request into calls; ``platform_calls`` gives what Lambda itself does with a function's
role (read its event source, send to its failure destinations). ``Role.allows`` evaluates
the role's inline statements as IAM does for the operators this template uses; any other
operator fails loudly, so a new condition is taught here before it is trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from local.deployable import transformed
from local.stack import ACCOUNT, REGION, Resolver, Stack

MANAGED_PREFIX = "arn:aws:iam::aws:policy/"

# The AWS managed policies a role may carry, each with when Lambda needs it for the
# function. SAM attaches AWSLambdaBasicExecutionRole to every role it generates (Lambda
# writes the function's logs with it) and AWSXrayWriteOnlyAccess to a traced function's.
# X-Ray's write actions have no resource type; the log actions are on "*" because SAM
# offers no way to scope them. Any other managed policy is a finding.
PLATFORM_POLICIES: dict[str, str] = {
    "service-role/AWSLambdaBasicExecutionRole": "always",
    "AWSXrayWriteOnlyAccess": "traced",
}

# Actions IAM authorises only on "*" (they have no resource type), with where they come
# from. Every other inline grant names this stack's resources.
REQUIRE_STAR: dict[str, str] = {}


@dataclass(frozen=True)
class Call:
    action: str  # "service:Operation", as IAM names it
    resource: str  # the ARN IAM authorises the call on
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # condition keys

    def __str__(self) -> str:
        keys = ", ".join(f"{k}={list(v)}" for k, v in sorted(self.context.items()))
        return f"{self.action} on {self.resource}" + (f" with {keys}" if keys else "")


def _like(value: str, pattern: str, *, ignore_case: bool = False) -> bool:
    """IAM's wildcard match: ``*`` any run of characters, ``?`` one; nothing else special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _listed(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list) else (value,)


def _condition_holds(operator: str, key: str, expected: tuple[str, ...], call: Call) -> bool:
    values = call.context.get(key, ())
    if operator == "Null":
        (absent,) = expected
        return (not values) == (absent.lower() == "true")
    qualifier, _, test = operator.rpartition(":")
    if test in {"StringEquals", "StringLike", "StringNotEquals", "StringNotLike"}:
        negated = "Not" in test

        def one(value: str) -> bool:
            if test.endswith("Like"):
                found = any(_like(value, pattern) for pattern in expected)
            else:
                found = value in expected
            return not found if negated else found

        if qualifier == "ForAllValues":
            return all(one(value) for value in values)
        if qualifier == "ForAnyValue":
            return any(one(value) for value in values)
        if qualifier == "" and len(values) <= 1:
            return one(values[0]) if values else negated
    raise AssertionError(f"the least-privilege check cannot evaluate {operator} on {key} yet")


@dataclass(frozen=True)
class Statement:
    policy: str
    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: Mapping[str, Mapping[str, tuple[str, ...]]]

    def grants(self, action: str) -> bool:
        return any(_like(action, a, ignore_case=True) for a in self.actions)

    def matches(self, call: Call) -> bool:
        return (
            self.grants(call.action)
            and any(_like(call.resource, r) for r in self.resources)
            and all(
                _condition_holds(operator, key, expected, call)
                for operator, tests in self.condition.items()
                for key, expected in tests.items()
            )
        )

    def __str__(self) -> str:
        return f"{self.policy}/{self.sid or '(no Sid)'}"


@dataclass(frozen=True)
class Role:
    """The role SAM generated for one function, its references resolved on the moto stack."""

    function: str
    logical_id: str
    statements: tuple[Statement, ...]
    managed: tuple[str, ...]  # names after arn:aws:iam::aws:policy/
    traced: bool

    def allows(self, call: Call) -> bool:
        return any(statement.matches(call) for statement in self.statements)


class Deployed:
    """template.yaml after the SAM transform, resolved against a stack on moto."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.resources: dict[str, Any] = transformed(stack.template)["Resources"]
        self._resolver = Resolver(stack.template, stack.physical, stack.parameters)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if isinstance(value, dict) and len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Fn::GetAtt" and isinstance(argument, str):
                return self._resolver.get_att(*argument.split(".", 1))
            return self._resolver.resolve({key: argument})
        return value

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            name: resource.get("Properties", {})
            for name, resource in self.resources.items()
            if resource["Type"] == resource_type
        }

    def functions(self) -> list[str]:
        return sorted(self.of_type("AWS::Lambda::Function"))

    def role(self, function: str) -> Role:
        properties = self.of_type("AWS::Lambda::Function")[function]
        role_ref = properties["Role"]
        if not (isinstance(role_ref, dict) and "Fn::GetAtt" in role_ref):
            raise AssertionError(f"{function} names its role by ARN: only this stack's are read")
        logical_id = role_ref["Fn::GetAtt"][0]
        role = self.of_type("AWS::IAM::Role")[logical_id]
        statements = []
        for policy in role.get("Policies", []):
            for raw in _listed(policy["PolicyDocument"]["Statement"]):
                assert raw.get("Effect") == "Allow", f"{logical_id}: only Allow is checked"
                assert "NotAction" not in raw, f"{logical_id}: NotAction grants too much"
                assert "NotResource" not in raw, f"{logical_id}: NotResource grants too much"
                statements.append(
                    Statement(
                        policy=policy["PolicyName"],
                        sid=raw.get("Sid", ""),
                        actions=_listed(raw["Action"]),
                        resources=tuple(str(self.resolve(r)) for r in _listed(raw["Resource"])),
                        condition={
                            operator: {k: tuple(map(str, _listed(v))) for k, v in tests.items()}
                            for operator, tests in raw.get("Condition", {}).items()
                        },
                    )
                )
        managed = tuple(
            arn.removeprefix(MANAGED_PREFIX) if isinstance(arn, str) else str(arn)
            for arn in role.get("ManagedPolicyArns", [])
        )
        tracing = properties.get("TracingConfig", {}).get("Mode")
        return Role(function, logical_id, tuple(statements), managed, tracing == "Active")

    def _targets(self, resource_type: str, function: str) -> Iterator[dict[str, Any]]:
        for properties in self.of_type(resource_type).values():
            if properties.get("FunctionName") == {"Ref": function}:
                yield properties

    def platform_calls(self, function: str) -> list[Call]:
        """What Lambda does with the function's role: poll its streams, send its failures."""
        calls: list[Call] = []
        destinations: list[dict[str, Any]] = []
        for mapping in self._targets("AWS::Lambda::EventSourceMapping", function):
            source = str(self.resolve(mapping["EventSourceArn"]))
            assert ":dynamodb:" in source, f"teach platform_calls the event source {source}"
            calls += [
                Call(f"dynamodb:{operation}", source)
                for operation in ("DescribeStream", "GetRecords", "GetShardIterator", "ListStreams")
            ]
            destinations.append(mapping.get("DestinationConfig", {}).get("OnFailure", {}))
        for config in self._targets("AWS::Lambda::EventInvokeConfig", function):
            destinations += list(config.get("DestinationConfig", {}).values())
        for destination in destinations:
            if destination:
                arn = str(self.resolve(destination["Destination"]))
                assert ":sqs:" in arn, f"teach platform_calls the destination {arn}"
                calls.append(Call("sqs:SendMessage", arn))
        return calls

    def stack_arns(self) -> set[str]:
        return {value for value in self.stack.physical.values() if value.startswith("arn:aws:")} | {
            self._bus_arn(self._resolver.parameter("EventBusName"))
        }

    # --- a boto3 request as the calls IAM authorises -----------------------------------

    def calls_of(self, service: str, operation: str, params: Mapping[str, Any]) -> list[Call]:
        action = f"{service}:{operation}"
        if service == "dynamodb":
            return [self._dynamodb_call(action, params)]
        if service == "kms":
            context = {
                f"kms:EncryptionContext:{k}": (str(v),)
                for k, v in params.get("EncryptionContext", {}).items()
            }
            return [Call(action, self._key_arn(params.get("KeyId")), context)]
        if service == "secretsmanager":
            return [Call(action, self._secret_arn(params["SecretId"]))]
        if service == "events" and operation == "PutEvents":
            buses = {entry.get("EventBusName", "default") for entry in params["Entries"]}
            return [Call(action, self._bus_arn(bus)) for bus in sorted(buses)]
        if service == "sqs":
            return [Call(action, self._queue_arn(params["QueueUrl"]))]
        raise AssertionError(f"teach calls_of the resource and keys of {action}")

    def _logical(self, physical: str) -> str:
        return next(k for k, v in self.stack.physical.items() if v == physical and "." not in k)

    def _dynamodb_call(self, action: str, params: Mapping[str, Any]) -> Call:
        table = params["TableName"]
        resource = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"
        if "IndexName" in params:
            resource += f"/index/{params['IndexName']}"
        keys = params.get("Key") or params.get("Item")
        if not keys:
            return Call(action, resource)
        schema = self.stack.template.resources[self._logical(table)]["Properties"]["KeySchema"]
        hash_key = next(k["AttributeName"] for k in schema if k["KeyType"] == "HASH")
        ((_, value),) = keys[hash_key].items()
        return Call(action, resource, {"dynamodb:LeadingKeys": (str(value),)})

    def _key_arn(self, key_id: str | None) -> str:
        keys = {
            logical: self.stack.physical[f"{logical}.Arn"]
            for logical in self.stack.template.of_type("AWS::KMS::Key")
        }
        if key_id is None:  # Decrypt finds the key in the ciphertext: the stack's one key
            (only,) = keys.values()
            return only
        for logical, arn in keys.items():
            if key_id in {arn, self.stack.physical[logical]}:
                return arn
        raise AssertionError(f"a KMS key this stack does not have: {key_id}")

    def _secret_arn(self, secret_id: str) -> str:
        if secret_id.startswith("arn:"):
            return secret_id
        return next(
            arn for arn in self.stack.physical.values() if f":secret:{secret_id}-" in str(arn)
        )

    @staticmethod
    def _bus_arn(bus: str) -> str:
        return (
            bus if bus.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{bus}"
        )

    def _queue_arn(self, url: str) -> str:
        return self.stack.physical[f"{self._logical(url)}.Arn"]


def findings(deployed: Deployed, function: str, code_calls: Iterable[Call]) -> list[str]:
    """Everything by which the function's role differs from exactly what it calls."""
    role = deployed.role(function)
    calls = [*code_calls, *deployed.platform_calls(function)]
    found = [f"{role.logical_id} does not allow {call}" for call in calls if not role.allows(call)]
    for statement in role.statements:
        for action in statement.actions:
            used = [c for c in calls if _like(c.action, action, ignore_case=True)]
            if not any(statement.matches(c) for c in used):
                found.append(f"{role.logical_id} grants {action} in {statement}, never called")
            if "*" in action:
                found.append(f"{role.logical_id} grants a wildcard action {action}")
        for resource in statement.resources:
            if resource == "*":
                found += [
                    f"{role.logical_id} grants {action} on * in {statement}"
                    for action in statement.actions
                    if action not in REQUIRE_STAR
                ]
            elif "*" in resource and not any(
                resource.startswith(f"{arn}/") for arn in deployed.stack_arns()
            ):
                found.append(f"{role.logical_id} grants on {resource}, beyond this stack")
    for name in role.managed:
        when = PLATFORM_POLICIES.get(name)
        if when is None or (when == "traced" and not role.traced):
            found.append(f"{role.logical_id} carries the managed policy {name}")
    return found
