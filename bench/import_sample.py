"""One fresh interpreter importing some code: its import time, as ``-X importtime`` sees it.

The process writes a marker to stderr just before the measured code; the import time is the
sum of the cumulative microseconds of the top-level imports after the marker (interpreter
start-up is not counted). The environments: the layer's source with bytecode cached in a
temporary PYTHONPYCACHEPREFIX (never in the tree), as ``make build`` ships it compiled; the
``sam build`` output itself; tracing on as deployed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from bench.common import BUILD_DIR, LAYER_DIR, ROOT

BUILT_LAYER = BUILD_DIR / "CapsuleOAuthLayer" / "python"

MARKER = "BENCH-IMPORT-MARKER"

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


@dataclass(frozen=True)
class Variant:
    code: str
    env: Mapping[str, str]
    args: tuple[str, ...] = ()

    def sample(self) -> Sample:
        return sample(self.code, self.env, *self.args)
