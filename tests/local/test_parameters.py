"""Template parameters for a local run: SAM CLI's --parameter-overrides, checked against
template.yaml before anything starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from local.parameters import InvalidParameter, parse_overrides
from local.stack import ROOT, Template

TEMPLATE = Template.load()


@pytest.mark.parametrize(
    "arguments",
    [
        ["AllowedReturnOrigins=https://app.example.com", "LogLevel=DEBUG"],
        ["AllowedReturnOrigins=https://app.example.com LogLevel=DEBUG"],
        [
            "ParameterKey=AllowedReturnOrigins,ParameterValue=https://app.example.com",
            "ParameterKey=LogLevel,ParameterValue=DEBUG",
        ],
    ],
    ids=["one-per-argument", "several-in-one", "long-form"],
)
def test_sam_clis_forms_are_read(arguments: list[str]) -> None:
    assert parse_overrides(TEMPLATE, arguments) == {
        "AllowedReturnOrigins": "https://app.example.com",
        "LogLevel": "DEBUG",
    }


def test_a_value_with_spaces_is_one_value_quoted_or_not() -> None:
    # make local PARAMETERS='CapsuleScope="read write"': the shell hands over one argument.
    assert parse_overrides(TEMPLATE, ["CapsuleScope=read write"]) == {"CapsuleScope": "read write"}
    assert parse_overrides(TEMPLATE, ['CapsuleScope="read write" LogLevel=ERROR']) == {
        "CapsuleScope": "read write",
        "LogLevel": "ERROR",
    }


def test_an_unknown_name_is_refused_listing_every_parameter() -> None:
    with pytest.raises(InvalidParameter) as refused:
        parse_overrides(TEMPLATE, ["AllowedOrigins=https://app.example.com"])

    message = str(refused.value)
    assert "'AllowedOrigins'" in message
    assert all(name in message for name in TEMPLATE.body["Parameters"])


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("LogLevel=LOUD", "LogLevel is one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
        ("StateTtlSeconds=5", "StateTtlSeconds is a number, at least 60, at most 3600"),
        ("StateTtlSeconds=ten", "StateTtlSeconds is a number"),
        ("AllowedReturnOrigins=http://app.example.com", "AllowedReturnOrigins is matching ^("),
        ("LogRetentionDays=2", "one of '1', '3', '5'"),
        ("TokenEndpointAuthMethod=private_key_jwt", "'client_secret_post', 'client_secret_basic'"),
    ],
)
def test_a_value_the_template_does_not_allow_is_refused_saying_what_it_allows(
    override: str, says: str
) -> None:
    with pytest.raises(InvalidParameter, match="is not allowed") as refused:
        parse_overrides(TEMPLATE, [override])

    assert says in str(refused.value)


def test_make_local_refuses_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "stack.json"
    env = {**os.environ, "LOCAL_STATE_FILE": str(state)}
    command = [sys.executable, "-m", "local", "--port", "0", "--aws-port", "0"]
    command += ["--capsule-port", "0", "--log-dir", str(tmp_path / "logs")]
    command += ["--parameter-overrides", "TokenEndpointAuthMethod=client_secret_jwt"]

    ran = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert ran.returncode == 2
    assert "TokenEndpointAuthMethod is one of 'client_secret_post', 'client_secret_basic'" in (
        ran.stderr
    )
    assert "running locally" not in ran.stdout
    assert not state.exists()
    assert not (tmp_path / "logs").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("target", "module"),
    [("local", "local"), ("demo", "local.demo"), ("invoke", "local.invoke")],
)
def test_make_passes_parameters_as_parameter_overrides(target: str, module: str) -> None:
    shown = subprocess.run(
        # -n: print the commands, run none
        ["make", "-n", "--no-print-directory", target, "PARAMETERS=LogLevel=DEBUG A=1"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    line = next(line for line in shown.splitlines() if f"-m {module}" in line)
    assert line.endswith("--parameter-overrides LogLevel=DEBUG A=1")


@pytest.mark.parametrize("module", ["local.demo", "local.invoke"])
def test_make_demo_and_make_invoke_refuse_the_same_way(module: str) -> None:
    command = [sys.executable, "-m", module]
    if module == "local.invoke":
        command += ["StartFunction", "events/start.json"]
    command += ["--parameter-overrides", "PkceEnabled=maybe"]

    ran = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)

    assert ran.returncode == 2
    assert "PkceEnabled='maybe' is not allowed: PkceEnabled is one of 'true', 'false'" in ran.stderr
