"""README's folder list and ``make help`` stay complete as the repository changes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


def readme_layout() -> list[str]:
    """The first word of each line of README's Development block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Development\n\n```\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md has no Development block listing the folders"
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


def make_targets() -> dict[str, str]:
    """Each target of the Makefile and the rest of its rule line."""
    return dict(re.findall(r"^([a-z0-9][a-z0-9-]*):(.*)$", MAKEFILE, re.MULTILINE))


def test_readme_lists_every_folder_and_only_folders_that_exist() -> None:
    listed = readme_layout()
    folders = {
        path.name + "/"
        for path in ROOT.iterdir()
        if path.is_dir() and not path.name.startswith((".", "__"))
    }

    assert {name for name in listed if name.endswith("/")} == folders
    assert [name for name in listed if not (ROOT / name).exists()] == []


def test_every_make_target_is_phony_and_described() -> None:
    targets = make_targets()
    phony = re.search(r"^\.PHONY:(.*)$", MAKEFILE, re.MULTILINE)
    assert phony

    assert set(phony.group(1).split()) == set(targets)
    assert [name for name, rule in targets.items() if "## " not in rule] == []


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_every_target() -> None:
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"],  # noqa: S607 - make from PATH, as a person runs it
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert set(re.findall(r"^  make (\S+)", shown, re.MULTILINE)) == set(make_targets())


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_the_variables_and_make_locals_flags() -> None:
    shown = subprocess.run(
        ["make", "--no-print-directory", "help"],  # noqa: S607 - make from PATH, as a person runs it
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    for word in (
        "PARAMETERS=",
        "LOCAL_ARGS=",
        "--verbose",
        "--port",
        "--aws-port",
        "--capsule-port",
    ):
        assert word in shown, word
        assert word in readme, word
