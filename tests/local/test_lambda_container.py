"""Running a function's handler as Lambda does, also when first requests arrive together."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from local.lambda_container import load_handler
from local.stack import FunctionSpec, Template

SLOW_HANDLER = """
import time

time.sleep(0.3)  # a handler module that takes a while to import, as a cold one does


def lambda_handler(event, context):
    return "answered"
"""


@pytest.fixture
def slow_function(tmp_path: Path, template: Template) -> Iterator[FunctionSpec]:
    (tmp_path / "app.py").write_text(SLOW_HANDLER, encoding="utf-8")
    spec = replace(template.function("StartFunction"), logical_id="SlowImport", code_dir=tmp_path)
    yield spec
    sys.modules.pop("_handler_SlowImport", None)


def test_concurrent_first_requests_all_get_the_imported_handler(
    slow_function: FunctionSpec,
) -> None:
    start = threading.Barrier(6)
    answers: list[Any] = []

    def first_request() -> None:
        start.wait()
        try:
            answers.append(load_handler(slow_function)({}, None))
        except Exception as error:  # what a request would have answered 500 with
            answers.append(error)

    threads = [threading.Thread(target=first_request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == ["answered"] * 6


def test_a_handler_that_fails_to_import_is_imported_again_next_time(
    slow_function: FunctionSpec,
) -> None:
    working = slow_function.handler_path.read_text(encoding="utf-8")
    slow_function.handler_path.write_text("raise RuntimeError('not yet')\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="not yet"):
        load_handler(slow_function)

    slow_function.handler_path.write_text(working, encoding="utf-8")

    assert load_handler(slow_function)({}, None) == "answered"
