"""The one Logger and Metrics every module and handler shares.

Settings come from the environment (POWERTOOLS_* in template.yaml's Globals). Nothing that
carries a secret is ever passed to them: no events, no responses, no tokens.

No Powertools Tracer: its X-Ray SDK brings 22 MB of botocore into the layer, which would
shadow the runtime's own botocore under boto3, and costs 20-40 ms of cold start (make bench).
Lambda's active tracing (template.yaml) still records every invocation in X-Ray.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

logger = Logger()
metrics = Metrics()


def count(name: str, value: float = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def count_by(name: str, dimension: str, label: str, value: float = 1) -> None:
    """Count ``name`` in total (what alarms watch) and once more split by ``dimension``."""
    count(name, value)
    with single_metric(
        name=name,
        unit=MetricUnit.Count,
        value=value,
        namespace=metrics.namespace,
        default_dimensions=metrics.default_dimensions,
    ) as metric:
        metric.add_dimension(name=dimension, value=label)
