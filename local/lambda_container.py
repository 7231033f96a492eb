"""One way to run a function of template.yaml here as Lambda runs it.

``LambdaFunction`` loads a function's handler from the file template.yaml names, with the
function's layers where Lambda mounts them (``/opt/python``: here, on ``sys.path``), and
calls it with a ``LambdaContext`` carrying the function's name, memory and time budget.
The tests, the bench, ``make local`` and ``make invoke`` all run handlers through it.

A Lambda container keeps module-level caches between invocations (clients, settings, the
client secret, decrypted tokens); ``reset_caches`` gives a new, cold container.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from local.stack import ACCOUNT, REGION, FunctionSpec, Template

Handler = Callable[[dict[str, Any], Any], Any]
# Runs a function, named by its logical id in template.yaml, on an event.
Invoke = Callable[[str, dict[str, Any]], Any]

# Held while a handler module imports: a concurrent first request waits for the finished
# module instead of finding a half-imported one in sys.modules.
_IMPORT_LOCK = threading.RLock()


@dataclass
class LambdaContext:
    """What Lambda passes as ``context``: enough for Powertools and the time budget."""

    function_name: str
    timeout_seconds: float
    memory_limit_in_mb: int = 256
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)
    cold_start: bool = False

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_seconds - (time.monotonic() - self.started)
        return max(int(left * 1000), 0)

    @classmethod
    def for_function(cls, spec: FunctionSpec, **overrides: Any) -> LambdaContext:
        return cls(
            function_name=spec.logical_id,
            timeout_seconds=spec.timeout,
            memory_limit_in_mb=spec.memory_mb,
            **overrides,
        )


# The invocation running in this thread: every function shares this process, where Lambda
# gives each its own container, so log lines are told apart by it (local/logs.py).
_running: contextvars.ContextVar[LambdaContext | None] = contextvars.ContextVar(
    "lambda_invocation", default=None
)
_warm: set[str] = set()


def current_function() -> str | None:
    """The logical id of the function running in this thread, if one is."""
    context = _running.get()
    return context.function_name if context is not None else None


@contextlib.contextmanager
def running(context: LambdaContext) -> Iterator[None]:
    """Code run as ``context``'s function: its log lines name it, and its output is its own."""
    token = _running.set(context)
    try:
        yield
    finally:
        _running.reset(token)


class _InvocationFields(logging.Filter):
    """Each log line names the function whose invocation wrote it, whichever thread's
    invocation last set the shared logger's keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _running.get()
        if context is not None:
            record.function_name = context.function_name
            record.function_arn = context.invoked_function_arn
            record.function_request_id = context.aws_request_id
            record.function_memory_size = context.memory_limit_in_mb
            record.cold_start = context.cold_start
        return True


def _label_log_lines() -> None:
    from capsule_oauth.observability import logger

    handler = logger.registered_handler
    if not any(isinstance(f, _InvocationFields) for f in handler.filters):
        handler.addFilter(_InvocationFields())


def mount_layers(spec: FunctionSpec) -> None:
    """Put the function's layers on sys.path, as Lambda mounts them on /opt/python."""
    for layer_dir in spec.layer_dirs:
        if str(layer_dir) not in sys.path and str(layer_dir.resolve()) not in sys.path:
            sys.path.append(str(layer_dir))


def load_handler(spec: FunctionSpec) -> Handler:
    """Import the function's handler module from its file, as Lambda does, under its own name.

    Every function's module is called ``app``; each gets a distinct name in sys.modules, and
    is imported once per process, as a warm container keeps it, under a lock: concurrent
    first requests all get the finished module.
    """
    name = f"_handler_{spec.logical_id}"
    with _IMPORT_LOCK:
        mount_layers(spec)
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, spec.handler_path)
            if loader_spec is None or loader_spec.loader is None:
                raise ImportError(f"cannot load {spec.handler_path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module  # as import does: the module may import itself
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]  # a failed import leaves nothing half-made behind
                raise
            _label_log_lines()
    handler: Handler = getattr(module, spec.attribute)
    return handler


class LambdaFunction:
    """A function of template.yaml, its handler loaded: ``invoke`` runs it on one event."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self.handler = load_handler(spec)

    @classmethod
    def of(cls, template: Template, logical_id: str) -> LambdaFunction:
        return cls(template.function(logical_id))

    def invoke(self, event: dict[str, Any]) -> Any:
        """The handler's answer to ``event``, with a fresh context as each invocation gets."""
        context = LambdaContext.for_function(
            self.spec, cold_start=self.spec.logical_id not in _warm
        )
        _warm.add(self.spec.logical_id)
        with running(context):
            return self.handler(event, context)


def invoke(template: Template, logical_id: str, event: dict[str, Any]) -> Any:
    """Run the function template.yaml names ``logical_id`` on ``event``, as Lambda would."""
    return LambdaFunction.of(template, logical_id).invoke(event)


def reset_caches() -> None:
    """What a new Lambda container starts with: no clients, settings, secret or tokens."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters import base as parameter_providers

    from capsule_oauth import config, tokens
    from capsule_oauth.capsule import api, budget
    from capsule_oauth.observability import metrics
    from capsule_oauth.store import aws

    aws.reset()
    config.settings.cache_clear()
    api.session.cache_clear()
    budget.reset()
    tokens.clear_cache()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
    # Providers hold boto3 clients bound to the mock they were made under.
    parameter_providers.DEFAULT_PROVIDERS.clear()  # type: ignore[attr-defined]
    metrics.clear_metrics()
