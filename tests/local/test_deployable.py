"""template.yaml deploys: after the SAM transform no resource depends on itself in a circle."""

from __future__ import annotations

from pathlib import Path

import pytest

from local import deployable
from local.stack import TEMPLATE_PATH


def test_the_template_has_no_dependency_cycle_after_the_transform(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert deployable.main([str(TEMPLATE_PATH)]) == 0
    assert "no cycle" in capsys.readouterr().out


def test_a_function_environment_naming_its_own_http_api_is_a_cycle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The mistake the check exists for: every route makes the API depend on its function,
    # so a function that names the API in its environment closes a circle.
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    assert "      Variables:\n" in text  # Globals' environment, shared by every function
    broken = tmp_path / "template.yaml"
    broken.write_text(
        text.replace("      Variables:\n", "      Variables:\n        API_ID: !Ref HttpApi\n", 1),
        encoding="utf-8",
    )

    assert deployable.main([str(broken)]) == 1
    printed = capsys.readouterr().out
    assert "circular dependency" in printed
    assert "HttpApi -> " in printed


def test_references_are_found_in_ref_getatt_and_sub() -> None:
    resources = {
        "A": {"Properties": {"X": {"Ref": "B"}}},
        "B": {"Properties": {"Y": {"Fn::Sub": "arn:${C.Arn}/${AWS::Region}"}}},
        "C": {"Properties": {"Z": {"Fn::GetAtt": ["A", "Arn"]}}},
        "D": {"DependsOn": "A", "Properties": {}},
    }
    graph = deployable.dependencies(resources)

    assert graph == {"A": {"B"}, "B": {"C"}, "C": {"A"}, "D": {"A"}}
    assert deployable.find_cycle(graph) == ["A", "B", "C", "A"]
    assert deployable.find_cycle({"D": {"A"}, "A": set()}) is None
