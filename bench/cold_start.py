"""Section 1: cold import of each handler in a fresh interpreter, paired with its floor.

Each sample is a new ``python -X importtime`` process (bench/import_sample.py); interpreter
start-up is not counted.

* handler: imports ``functions/<name>/app.py`` from its file, as Lambda does, with the layer
  on ``PYTHONPATH`` and the function's environment from template.yaml.
* floor: what that handler cannot avoid: boto3, the Powertools modules it uses (Logger and
  Metrics constructed, as ``observability.py`` does), and ``requests`` for the functions
  that call Capsule.
* own = handler - floor: what the connector's own code adds.

Handler and floor are sampled in pairs, one right after the other (which goes first
alternates), so the machine's drift hits both alike; the figure is the median of the
per-pair differences with its spread (bench/paired.py), and the 20 ms target is judged only
when the 95 % interval of that median is narrower than 20 ms.

Bytecode is cached (in a temporary PYTHONPYCACHEPREFIX, never in the tree) for both, as
``make build`` ships the layer and functions compiled. With a build present, the actual
``sam build`` output is paired with a copy of it without the .pyc (what Lambda would compile
on every cold start, /opt being read-only): whether shipping bytecode pays. The Powertools
Tracer rows are what-ifs: the connector does not use it (observability.py says why).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import BUILD_DIR, FUNCTIONS_DIR, SKIP, Row, median, verdict
from bench.import_sample import (
    BUILT_LAYER,
    Sample,
    Variant,
    base_environment,
    built_layer_environment,
    lambda_tracing_environment,
)
from bench.paired import PairedFigure, judge_at_most, judge_positive

SECTION = "cold import"
OWN_TARGET_MS = 20.0

_IMPORT_HANDLER = """
import importlib.util
_spec = importlib.util.spec_from_file_location("app", sys.argv[1])
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
"""
_POWERTOOLS_FLOOR = """
import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.typing import LambdaContext
Logger(); Metrics()
"""
_DATA_CLASSES = "from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2\n"
_REQUESTS = "import requests\n"

_TRACER_BASELINE = """
import boto3
from aws_lambda_powertools import Logger, Metrics
Logger(); Metrics()
"""
_TRACER = "from aws_lambda_powertools import Tracer\nTracer()\n"
_TRACER_BOTOCORE_ONLY = (
    "from aws_lambda_powertools import Tracer\nTracer(patch_modules=('botocore',))\n"
)


@dataclass(frozen=True)
class HandlerSpec:
    logical_id: str
    directory: str
    http: bool  # behind API Gateway: uses the event data classes
    calls_capsule: bool  # needs requests

    @property
    def path(self) -> str:
        return str(FUNCTIONS_DIR / self.directory / "app.py")

    @property
    def floor_code(self) -> str:
        code = _POWERTOOLS_FLOOR
        if self.http:
            code += _DATA_CLASSES
        if self.calls_capsule:
            code += _REQUESTS
        return code


HANDLERS = (
    HandlerSpec("StartFunction", "start", http=True, calls_capsule=False),
    HandlerSpec("CallbackFunction", "callback", http=True, calls_capsule=True),
    HandlerSpec("RefreshFunction", "refresh", http=False, calls_capsule=True),
)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: the figure is the median of ``a - b`` over pairs."""

    name: str
    a: Variant
    b: Variant


@dataclass
class Paired:
    a: list[Sample]
    b: list[Sample]

    @property
    def figure(self) -> PairedFigure:
        return PairedFigure.of([s.import_ms for s in self.a], [s.import_ms for s in self.b])


def sample_pairs(
    comparisons: list[Comparison], repetitions: int, *, warm_up: bool
) -> dict[str, Paired]:
    """Round-robin over the comparisons, each a pair of back-to-back fresh interpreters."""
    if warm_up:  # compile bytecode and warm the page cache; not counted
        for comparison in comparisons:
            comparison.a.sample()
            comparison.b.sample()
    paired = {comparison.name: Paired([], []) for comparison in comparisons}
    for repetition in range(repetitions):
        for comparison in comparisons:
            results = paired[comparison.name]
            if repetition % 2 == 0:  # alternate the order: no side always goes second
                results.a.append(comparison.a.sample())
                results.b.append(comparison.b.sample())
            else:
                results.b.append(comparison.b.sample())
                results.a.append(comparison.a.sample())
    return paired


def sourceless_copy(source: Path, into: Path) -> Path:
    """``source`` without its bytecode: what a build without ``compileall`` would ship."""
    destination = into / source.name
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))
    return destination


def _comparisons(built_copy: Path | None) -> list[Comparison]:
    env = base_environment()
    tracing_env = lambda_tracing_environment()
    comparisons = [
        Comparison(
            f"{spec.logical_id}:own",
            Variant(_IMPORT_HANDLER, env, (spec.path,)),
            Variant(spec.floor_code, env),
        )
        for spec in HANDLERS
    ]
    baseline = Variant(_TRACER_BASELINE, env)
    comparisons += [
        Comparison("tracer:disabled", Variant(_TRACER_BASELINE + _TRACER, env), baseline),
        Comparison("tracer:enabled", Variant(_TRACER_BASELINE + _TRACER, tracing_env), baseline),
        Comparison(
            "tracer:botocore-only",
            Variant(_TRACER_BASELINE + _TRACER_BOTOCORE_ONLY, tracing_env),
            baseline,
        ),
    ]
    if built_copy is not None:
        shipped = built_layer_environment()
        compiled_each_time = {**shipped, "PYTHONPATH": str(built_copy / "python")}
        for spec in HANDLERS:
            handler = str(BUILD_DIR / spec.logical_id / "app.py")
            comparisons.append(
                Comparison(
                    f"{spec.logical_id}:bytecode",
                    Variant(_IMPORT_HANDLER, compiled_each_time, (handler,)),
                    Variant(_IMPORT_HANDLER, shipped, (handler,)),
                )
            )
    return comparisons


def _skipped(shown: str, status: str, reason: str) -> str:
    return f"{shown}; {status}: {reason}" if reason else shown


def _own_row(spec: HandlerSpec, paired: Paired, *, judged: bool) -> Row:
    figure = paired.figure
    status, reason = judge_at_most(figure, OWN_TARGET_MS, judged=judged)
    handler_ms = median([s.import_ms for s in paired.a])
    floor_ms = median([s.import_ms for s in paired.b])
    layer_ms = median([s.layer_self_ms for s in paired.a])
    return Row(
        SECTION,
        f"{spec.logical_id} import over its floor (handler - floor, paired)",
        _skipped(
            f"{figure.shown()}; handler {handler_ms:.0f}, floor {floor_ms:.0f},"
            f" layer modules {layer_ms:.1f} ms",
            status,
            reason,
        ),
        f"median <= {OWN_TARGET_MS:.0f} ms, judged if 95% CI < {OWN_TARGET_MS:.0f} ms",
        status,
        value=round(figure.median, 2),
        unit="ms",
        detail={
            **figure.as_dict(),
            "skip_reason": reason,
            "handler_ms": round(handler_ms, 2),
            "floor_ms": round(floor_ms, 2),
            "layer_modules_self_ms": round(layer_ms, 2),
            "handler_samples_ms": [round(s.import_ms, 2) for s in paired.a],
            "floor_samples_ms": [round(s.import_ms, 2) for s in paired.b],
            "handler_wall_ms": round(median([s.wall_ms for s in paired.a]), 2),
            "floor_wall_ms": round(median([s.wall_ms for s in paired.b]), 2),
            "modules_loaded": paired.a[0].modules,
            "imports_requests": paired.a[0].requests,
        },
    )


def _bytecode_row(spec: HandlerSpec, paired: Paired, pyc: int, *, judged: bool) -> Row:
    figure = paired.figure
    status, reason = judge_positive(figure, judged=judged)
    return Row(
        SECTION,
        f"{spec.logical_id}: shipped bytecode saves (as built, {pyc} .pyc; paired)",
        _skipped(figure.shown(), status, reason),
        "> 0 ms: keep shipping .pyc",
        status,
        value=round(figure.median, 2),
        unit="ms",
        detail={
            **figure.as_dict(),
            "skip_reason": reason,
            "with_pyc_ms": round(median([s.import_ms for s in paired.b]), 2),
            "source_only_ms": round(median([s.import_ms for s in paired.a]), 2),
            "pyc_files_in_layer": pyc,
        },
    )


def _what_if(metric: str, paired: Paired, **extra: object) -> Row:
    figure = paired.figure
    return Row(
        SECTION,
        metric,
        figure.shown(),
        value=round(figure.median, 2),
        unit="ms",
        detail={**figure.as_dict(), **extra},
    )


def run(repetitions: int, *, warm_up: bool, judged: bool) -> list[Row]:
    """``judged``: a quick run reports its figures but never judges a noisy one."""
    built = BUILT_LAYER.is_dir()
    with tempfile.TemporaryDirectory(prefix="bench-sourceless-") as scratch:
        built_copy = sourceless_copy(BUILT_LAYER.parent, Path(scratch)) if built else None
        paired = sample_pairs(_comparisons(built_copy), repetitions, warm_up=warm_up)

    rows = [_own_row(spec, paired[f"{spec.logical_id}:own"], judged=judged) for spec in HANDLERS]
    if built:
        pyc = sum(1 for _ in BUILT_LAYER.rglob("*.pyc"))
        rows += [
            _bytecode_row(spec, paired[f"{spec.logical_id}:bytecode"], pyc, judged=judged)
            for spec in HANDLERS
        ]
    else:
        rows.append(
            Row(
                SECTION,
                "shipped bytecode saves (as built; paired)",
                "no .aws-sam/build (make build)",
                "> 0 ms: keep shipping .pyc",
                SKIP,
            )
        )
    start_requests = paired["StartFunction:own"].a[0].requests
    rows.append(
        Row(
            SECTION,
            "StartFunction imports requests",
            "yes" if start_requests else "no",
            "no",
            verdict(not start_requests),
            value=start_requests,
        )
    )
    rows.append(
        _what_if("what-if Powertools Tracer, cold (tracing disabled)", paired["tracer:disabled"])
    )
    rows.append(
        _what_if(
            "what-if Powertools Tracer, cold (tracing on, patch all)",
            paired["tracer:enabled"],
            imports_requests=paired["tracer:enabled"].a[0].requests,
        )
    )
    botocore_only = paired["tracer:botocore-only"]
    rows.append(
        _what_if(
            "what-if Tracer(patch_modules=('botocore',)), tracing on"
            f" (imports requests: {'yes' if botocore_only.a[0].requests else 'no'})",
            botocore_only,
            imports_requests=botocore_only.a[0].requests,
        )
    )
    return rows
