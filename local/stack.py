"""template.yaml as data, and the stack it describes created on moto.

The tests, the bench and the local stack all build DynamoDB tables, the KMS key and the
secret from the template's own resource definitions, and give each function the
environment the template gives it, so none can drift from what is deployed. Running a
function's handler is local/lambda_container.py's job.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
EVENTS = ROOT / "events"
REGION = "us-east-1"
ACCOUNT = "123456789012"


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !GetAtt, !Sub, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    module: str
    attribute: str
    timeout: int
    memory_mb: int
    environment: dict[str, Any]
    events: dict[str, Any]
    layer_dirs: tuple[Path, ...] = ()

    @property
    def handler_path(self) -> Path:
        return self.code_dir / f"{self.module.replace('.', '/')}.py"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str
    authorizer: str | None = None  # "AWS_IAM" on the routes the app's backend calls


@dataclass(frozen=True)
class Template:
    body: dict[str, Any]
    root: Path = ROOT

    @classmethod
    def load(cls, path: Path = TEMPLATE_PATH) -> Template:
        with path.open(encoding="utf-8") as stream:
            body = yaml.load(stream, Loader=_CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
        return cls(body=body, root=path.resolve().parent)

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.body["Resources"])

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource.get("Properties", {})
            for logical_id, resource in self.resources.items()
            if resource["Type"] == resource_type
        }

    def parameter_defaults(self) -> dict[str, str]:
        return {
            name: str(spec.get("Default", ""))
            for name, spec in self.body.get("Parameters", {}).items()
        }

    def function(self, logical_id: str) -> FunctionSpec:
        properties = self.of_type("AWS::Serverless::Function")[logical_id]
        defaults = self.body.get("Globals", {}).get("Function", {})
        module, attribute = properties.get("Handler", defaults.get("Handler")).rsplit(".", 1)
        environment = {
            **defaults.get("Environment", {}).get("Variables", {}),
            **properties.get("Environment", {}).get("Variables", {}),
        }
        return FunctionSpec(
            logical_id=logical_id,
            code_dir=self.root / properties["CodeUri"],
            module=module,
            attribute=attribute,
            timeout=int(properties.get("Timeout", defaults.get("Timeout", 3))),
            memory_mb=int(properties.get("MemorySize", defaults.get("MemorySize", 128))),
            environment=environment,
            events=properties.get("Events", {}),
            layer_dirs=tuple(
                self.root / self.resources[layer["Ref"]]["Properties"]["ContentUri"]
                for layer in properties.get("Layers", defaults.get("Layers", []))
                if isinstance(layer, dict) and "Ref" in layer
            ),
        )

    def functions(self) -> list[FunctionSpec]:
        return [self.function(name) for name in self.of_type("AWS::Serverless::Function")]

    def routes(self) -> list[Route]:
        return [
            Route(
                event["Properties"]["Method"].upper(),
                event["Properties"]["Path"],
                spec.logical_id,
                event["Properties"].get("Auth", {}).get("Authorizer"),
            )
            for spec in self.functions()
            for event in spec.events.values()
            if event["Type"] == "HttpApi"
        ]

    def schedules(self, parameters: Mapping[str, str] | None = None) -> dict[str, str]:
        """Function logical id -> schedule expression (parameters resolved, by default to
        their defaults)."""
        found = {}
        for spec in self.functions():
            for event in spec.events.values():
                if event["Type"] in {"Schedule", "ScheduleV2"}:
                    expression = event["Properties"].get("Schedule") or event["Properties"].get(
                        "ScheduleExpression"
                    )
                    found[spec.logical_id] = str(
                        Resolver(self, {}, parameters or {}).resolve(expression)
                    )
        return found


def load_event(name: str) -> dict[str, Any]:
    """An event of events/, by file name (what sam local invoke -e would read)."""
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def schedule_seconds(expression: str) -> int:
    """Seconds between runs of a ``rate(N unit)`` expression."""
    match = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expression)
    if not match:
        raise ValueError(f"only rate(...) schedules run locally, got {expression!r}")
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit


@dataclass
class Resolver:
    """Resolves the intrinsic functions the template uses in values read at run time."""

    template: Template
    physical: Mapping[str, str]
    parameters: Mapping[str, str]

    def parameter(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        return self.template.parameter_defaults()[name]

    def ref(self, name: str) -> str:
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
        if name in pseudo:
            return pseudo[name]
        if name in self.template.body.get("Parameters", {}):
            return self.parameter(name)
        if name in self.physical:
            return self.physical[name]
        raise KeyError(f"cannot resolve Ref {name} locally")

    def get_att(self, name: str, attribute: str) -> str:
        key = f"{name}.{attribute}"
        if key in self.physical:
            return self.physical[key]
        raise KeyError(f"cannot resolve GetAtt {key} locally")

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::GetAtt":
                return self.get_att(*argument)
            if key == "Fn::Sub":
                return re.sub(
                    r"\$\{([^}]+)\}",
                    lambda m: (
                        self.get_att(*m.group(1).split(".", 1))
                        if "." in m.group(1)
                        else self.ref(m.group(1))
                    ),
                    argument,
                )
        return value


@dataclass
class Stack:
    """The template's data resources, created on whatever AWS endpoint boto3 talks to."""

    template: Template
    physical: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)

    def environment(self, logical_id: str) -> dict[str, str]:
        resolver = Resolver(self.template, self.physical, self.parameters)
        spec = self.template.function(logical_id)
        return {name: str(resolver.resolve(value)) for name, value in spec.environment.items()}

    @property
    def state_table(self) -> str:
        return self.physical["StateTable"]

    @property
    def connections_table(self) -> str:
        return self.physical["ConnectionsTable"]

    @property
    def token_key_id(self) -> str:
        return self.physical["TokenKey"]

    @property
    def secret_id(self) -> str:
        return self.physical["ClientCredentialsSecret"]


def create_stack(
    template: Template,
    *,
    client_credentials: Mapping[str, str],
    parameters: Mapping[str, str] | None = None,
    prefix: str | None = None,
    session: boto3.Session | None = None,
) -> Stack:
    """Create every table, KMS key and secret of the template; seed the secret."""
    session = session or boto3.Session(region_name=REGION)
    prefix = prefix or f"capsule-{uuid.uuid4().hex[:8]}"
    stack = Stack(template, parameters=dict(parameters or {}))
    dynamodb = session.client("dynamodb")
    for logical_id, properties in template.of_type("AWS::DynamoDB::Table").items():
        name = f"{prefix}-{logical_id}"
        request: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "KeySchema": properties["KeySchema"],
            "BillingMode": properties.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in properties:
            request["GlobalSecondaryIndexes"] = properties["GlobalSecondaryIndexes"]
        if "StreamSpecification" in properties:
            request["StreamSpecification"] = {
                "StreamEnabled": True,
                **properties["StreamSpecification"],
            }
        description = dynamodb.create_table(**request)["TableDescription"]
        dynamodb.get_waiter("table_exists").wait(TableName=name)
        ttl = properties.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        stack.physical[logical_id] = name
        stack.physical[f"{logical_id}.Arn"] = description["TableArn"]
        if "LatestStreamArn" in description:
            stack.physical[f"{logical_id}.StreamArn"] = description["LatestStreamArn"]
    kms = session.client("kms")
    for logical_id, properties in template.of_type("AWS::KMS::Key").items():
        key = kms.create_key(Description=properties.get("Description", logical_id))["KeyMetadata"]
        stack.physical[logical_id] = key["KeyId"]
        stack.physical[f"{logical_id}.Arn"] = key["Arn"]
    sqs = session.client("sqs")
    for logical_id in template.of_type("AWS::SQS::Queue"):
        url = sqs.create_queue(QueueName=f"{prefix}-{logical_id}")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
        stack.physical[logical_id] = url
        stack.physical[f"{logical_id}.Arn"] = arn["QueueArn"]
        stack.physical[f"{logical_id}.QueueName"] = f"{prefix}-{logical_id}"
    secrets = session.client("secretsmanager")
    for logical_id in template.of_type("AWS::SecretsManager::Secret"):
        secret = secrets.create_secret(
            Name=f"{prefix}-{logical_id}", SecretString=json.dumps(dict(client_credentials))
        )
        stack.physical[logical_id] = secret["ARN"]
    return stack


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
