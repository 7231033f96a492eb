"""Section 1: cold import of each handler in a fresh interpreter, against its floor.

Each sample is a new ``python -X importtime`` process. The process writes a marker to stderr
just before the measured imports; the import time is the sum of the cumulative microseconds
of the top-level imports after the marker (interpreter start-up is not counted).

* handler: imports ``functions/<name>/app.py`` from its file, as Lambda does, with the layer
  on ``PYTHONPATH`` and the function's environment from template.yaml.
* floor: what that handler cannot avoid: boto3, the Powertools modules it uses (Logger and
  Metrics constructed, as ``observability.py`` does), and ``requests`` for the functions
  that call Capsule.
* own = handler - floor: what the connector's own code adds.

Bytecode is cached (in a temporary PYTHONPYCACHEPREFIX, never in the tree) for both, as
``make build`` ships the layer and functions compiled; "as built" rows import the actual
``sam build`` output instead. The Powertools Tracer rows are what-ifs: the connector does
not use it (observability.py says why).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from bench.common import BUILD_DIR, FUNCTIONS_DIR, LAYER_DIR, ROOT, SKIP, Row, median, verdict

SECTION = "cold import"
BUILT_LAYER = BUILD_DIR / "CapsuleOAuthLayer" / "python"
MARKER = "BENCH-IMPORT-MARKER"
OWN_TARGET_MS = 20.0

# The measured snippet: everything after the marker counts.
_PRELUDE = f"""
import json, sys, time
sys.stderr.write("{MARKER}\\n"); sys.stderr.flush()
_t0 = time.perf_counter()
"""
_EPILOGUE = """
_wall = (time.perf_counter() - _t0) * 1000
print(json.dumps({"wall_ms": _wall, "requests": "requests" in sys.modules,
                  "aws_xray_sdk": "aws_xray_sdk" in sys.modules, "modules": len(sys.modules)}))
"""
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
class Sample:
    import_ms: float  # sum of top-level cumulative import time after the marker
    layer_self_ms: float  # self time of the capsule_oauth modules
    wall_ms: float  # perf_counter around the same code (includes importtime's own overhead)
    requests: bool
    aws_xray_sdk: bool
    modules: int


def parse_importtime(stderr: str, own_package: str = "capsule_oauth") -> tuple[float, float]:
    """Milliseconds: the cumulative time of the outermost imports after the marker, and the
    self time of ``own_package``'s modules (what the connector's own code costs to load)."""
    lines = stderr.splitlines()
    try:
        start = lines.index(MARKER) + 1
    except ValueError:
        raise RuntimeError("import-time marker not found in the subprocess output") from None
    entries: list[tuple[int, int]] = []
    own_us = 0
    for line in lines[start:]:
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line
        name = parts[2]
        depth = len(name) - len(name.lstrip(" "))
        entries.append((depth, int(parts[1])))
        module = name.strip()
        if module == own_package or module.startswith(own_package + "."):
            own_us += int(parts[0])
    if not entries:
        return 0.0, 0.0
    top = min(depth for depth, _ in entries)
    total_us = sum(cumulative for depth, cumulative in entries if depth == top)
    return total_us / 1000, own_us / 1000


# What a function's environment holds in Lambda (only the presence of settings matters here).
FUNCTION_ENVIRONMENT: dict[str, str] = {
    "STATE_TABLE_NAME": "bench-StateTable",
    "CONNECTIONS_TABLE_NAME": "bench-ConnectionsTable",
    "TOKEN_KEY_ID": "00000000-0000-0000-0000-000000000000",
    "CLIENT_CREDENTIALS_SECRET_ID": "bench-ClientCredentialsSecret",
    "CAPSULE_BASE_URL": "https://api.capsulecrm.com",
    # As in Lambda. Without it the X-Ray SDK, which every Tracer() imports even when tracing
    # is disabled, builds a botocore X-Ray client for its sampler: ~90 ms of start-up that
    # Lambda never pays (there it uses a local sampler).
    "LAMBDA_TASK_ROOT": "/var/task",
}


_PYCACHE = tempfile.mkdtemp(prefix="bench-pycache-")


def base_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = _PYCACHE
    env["PYTHONPATH"] = str(LAYER_DIR)
    env.update(FUNCTION_ENVIRONMENT)
    env.update(extra or {})
    return env


def built_layer_environment() -> dict[str, str]:
    """The layer as ``make build`` made it, on the path ahead of site-packages as /opt/python
    is in Lambda, and no bytecode written (/opt is read-only there): only shipped .pyc help."""
    env = base_environment({"PYTHONPATH": str(BUILT_LAYER), "PYTHONDONTWRITEBYTECODE": "1"})
    env.pop("PYTHONPYCACHEPREFIX")
    return env


def lambda_tracing_environment() -> dict[str, str]:
    """As deployed (Tracing: Active): Powertools sees Lambda and tracing is not disabled."""
    env = base_environment()
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    return env


def sample(code: str, env: Mapping[str, str], *args: str) -> Sample:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _PRELUDE + code + _EPILOGUE, *args],
        cwd=ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.splitlines()[-15:])
        raise RuntimeError(f"import subprocess failed ({completed.returncode}):\n{tail}")
    facts = json.loads(completed.stdout.strip().splitlines()[-1])
    import_ms, layer_self_ms = parse_importtime(completed.stderr)
    return Sample(
        import_ms=import_ms,
        layer_self_ms=layer_self_ms,
        wall_ms=float(facts["wall_ms"]),
        requests=bool(facts["requests"]),
        aws_xray_sdk=bool(facts["aws_xray_sdk"]),
        modules=int(facts["modules"]),
    )


def _medians(samples: list[Sample]) -> tuple[float, float]:
    return median([s.import_ms for s in samples]), median([s.wall_ms for s in samples])


def run(repetitions: int, *, warm_up: bool) -> list[Row]:
    env = base_environment()
    tracing_env = lambda_tracing_environment()
    variants: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {}
    for spec in HANDLERS:
        variants[f"{spec.logical_id}:handler"] = (_IMPORT_HANDLER, env, (spec.path,))
        variants[f"{spec.logical_id}:floor"] = (spec.floor_code, env, ())
    variants["tracer:baseline"] = (_TRACER_BASELINE, env, ())
    variants["tracer:disabled"] = (_TRACER_BASELINE + _TRACER, env, ())
    variants["tracer:enabled"] = (_TRACER_BASELINE + _TRACER, tracing_env, ())
    variants["tracer:botocore-only"] = (_TRACER_BASELINE + _TRACER_BOTOCORE_ONLY, tracing_env, ())
    built = BUILT_LAYER.is_dir()
    if built:
        built_env = built_layer_environment()
        for spec in HANDLERS:
            built_handler = BUILD_DIR / spec.logical_id / "app.py"
            variants[f"{spec.logical_id}:built"] = (
                _IMPORT_HANDLER,
                built_env,
                (str(built_handler),),
            )

    if warm_up:  # compile bytecode and warm the page cache; not counted
        for code, variant_env, args in variants.values():
            sample(code, variant_env, *args)
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    for _ in range(repetitions):  # interleaved, so drift hits every variant alike
        for name, (code, variant_env, args) in variants.items():
            samples[name].append(sample(code, variant_env, *args))

    rows: list[Row] = []
    for spec in HANDLERS:
        handler_ms, handler_wall = _medians(samples[f"{spec.logical_id}:handler"])
        floor_ms, floor_wall = _medians(samples[f"{spec.logical_id}:floor"])
        own = handler_ms - floor_ms
        handler_samples = samples[f"{spec.logical_id}:handler"]
        layer_ms = median([s.layer_self_ms for s in handler_samples])
        rows.append(
            Row(
                SECTION,
                f"{spec.logical_id} import (handler / floor / own)",
                f"{handler_ms:.1f} / {floor_ms:.1f} / {own:+.1f} ms (layer modules {layer_ms:.1f})",
                f"own <= {OWN_TARGET_MS:.0f} ms",
                # One sample on a busy machine says nothing about a 20 ms target.
                verdict(own <= OWN_TARGET_MS) if repetitions >= 5 else SKIP,
                value=round(own, 2),
                unit="ms",
                detail={
                    "handler_ms": round(handler_ms, 2),
                    "floor_ms": round(floor_ms, 2),
                    "own_ms": round(own, 2),
                    "layer_modules_self_ms": round(layer_ms, 2),
                    "handler_min_ms": round(min(s.import_ms for s in handler_samples), 2),
                    "floor_min_ms": round(
                        min(s.import_ms for s in samples[f"{spec.logical_id}:floor"]), 2
                    ),
                    "handler_wall_ms": round(handler_wall, 2),
                    "floor_wall_ms": round(floor_wall, 2),
                    "handler_samples_ms": [
                        round(s.import_ms, 2) for s in samples[f"{spec.logical_id}:handler"]
                    ],
                    "floor_samples_ms": [
                        round(s.import_ms, 2) for s in samples[f"{spec.logical_id}:floor"]
                    ],
                    "modules_loaded": samples[f"{spec.logical_id}:handler"][0].modules,
                    "imports_requests": samples[f"{spec.logical_id}:handler"][0].requests,
                },
            )
        )
    if built:
        pyc = sum(1 for _ in BUILT_LAYER.rglob("*.pyc"))
        for spec in HANDLERS:
            built_ms, _ = _medians(samples[f"{spec.logical_id}:built"])
            source_ms, _ = _medians(samples[f"{spec.logical_id}:handler"])
            rows.append(
                Row(
                    SECTION,
                    f"{spec.logical_id} import as built (.aws-sam layer: {pyc} .pyc)",
                    f"{built_ms:.1f} ms ({built_ms - source_ms:+.1f} vs the handler row)",
                    value=round(built_ms, 2),
                    unit="ms",
                    detail={"with_pyc_ms": round(source_ms, 2), "pyc_files_in_layer": pyc},
                )
            )
    start_requests = samples["StartFunction:handler"][0].requests
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
    baseline, _ = _medians(samples["tracer:baseline"])
    disabled, _ = _medians(samples["tracer:disabled"])
    enabled, _ = _medians(samples["tracer:enabled"])
    botocore_only, _ = _medians(samples["tracer:botocore-only"])
    botocore_only_requests = samples["tracer:botocore-only"][0].requests
    rows.append(
        Row(
            SECTION,
            "what-if Powertools Tracer, cold (tracing disabled)",
            f"{disabled - baseline:.1f} ms",
            value=round(disabled - baseline, 2),
            unit="ms",
            detail={"without_ms": round(baseline, 2), "with_ms": round(disabled, 2)},
        )
    )
    rows.append(
        Row(
            SECTION,
            "what-if Powertools Tracer, cold (tracing on, patch all)",
            f"{enabled - baseline:.1f} ms",
            value=round(enabled - baseline, 2),
            unit="ms",
            detail={
                "without_ms": round(baseline, 2),
                "with_ms": round(enabled, 2),
                "imports_requests": samples["tracer:enabled"][0].requests,
            },
        )
    )
    rows.append(
        Row(
            SECTION,
            "what-if Tracer(patch_modules=('botocore',)), tracing on",
            f"adds {botocore_only - baseline:.1f} ms; imports requests:"
            f" {'yes' if botocore_only_requests else 'no'}",
            value=round(botocore_only - baseline, 2),
            unit="ms",
            detail={"with_ms": round(botocore_only, 2), "imports_requests": botocore_only_requests},
        )
    )
    return rows
