"""Benchmarks of the connector: cold import, first invocation, calls per flow, refresh at
scale, deploy size.

Run ``python -m bench`` (or ``make bench``); ``--quick`` runs tiny sizes for CI. The numbers
are reported, never asserted: every row with a target is marked PASS, MISS or SKIP (not
judged, with the reason: too noisy, a quick run, or a machine that cannot show it), and the
run exits 0 either way.

Importing this package makes the process safe to benchmark offline, before anything imports
boto3 or Powertools: fake AWS credentials, a fixed region, no real endpoint, and Powertools
quiet (no metrics on stdout, errors only in the log).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# Handlers find capsule_oauth on /opt/python in Lambda; here the layer's source is that path.
_PATHS = (str(_ROOT / "layers" / "capsule_oauth"), str(_ROOT))

BENCH_ENVIRONMENT: dict[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "capsule-connector",
    "POWERTOOLS_METRICS_NAMESPACE": "CapsuleConnector",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_DEV": "false",
}
_NEVER = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def configure_environment() -> None:
    for name in _NEVER:
        os.environ.pop(name, None)
    os.environ.update(BENCH_ENVIRONMENT)
    for path in reversed(_PATHS):
        if path not in sys.path:
            sys.path.insert(0, path)


configure_environment()
