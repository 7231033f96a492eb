"""Section 5: what ``sam build`` puts in each artifact, unzipped, and what the layer bundles.

Sizes are the sum of the files' sizes (what Lambda's 250 MB unzipped limit counts),
including the .pyc files ``make build`` compiles in. Size is reported, not a target on its
own: what a person feels is the cold start, and the paired cold-import figures decide
whether the bytecode earns its megabytes. The what-ifs: the same without those .pyc, and that
with bare urllib3 instead of requests (the layer's installed distributions, by their
dist-info RECORD files, minus what only requests needs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from bench.common import BUILD_DIR, LAYER_DIR, ROOT, SKIP, Row, verdict

SECTION = "deploy size"
LAYER = "CapsuleOAuthLayer"
MB = 1024 * 1024
# Lambda's python3.13 runtime on arm64, for dependency markers.
_TARGET_ENVIRONMENT: dict[str, str] = {
    **{str(key): str(value) for key, value in default_environment().items()},
    "python_version": "3.13",
    "python_full_version": "3.13.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "aarch64",
}


def tree_bytes(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            file = Path(directory, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def sam_build() -> str | None:
    """Run ``sam build`` and compile the bytecode in, as ``make build`` does; the error text
    if it failed."""
    sam = Path(sys.executable).with_name("sam")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    python313 = shutil.which("python3.13", path=env.get("PATH"))
    if python313 is None:
        return "sam build needs python3.13 on PATH"
    build = [str(sam) if sam.exists() else "sam", "build", "--template", "template.yaml"]
    compile_in = [python313, "-m", "compileall", "-q", "-j", "0"]
    for command in (
        [*build, "--parallel"],
        [*compile_in, "--invalidation-mode", "unchecked-hash", str(BUILD_DIR)],
    ):
        completed = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if completed.returncode != 0:
            return "\n".join((completed.stderr or completed.stdout).splitlines()[-5:])
    return None


def ensure_build(*, quick: bool, rebuild: bool) -> str:
    """Build when asked to, or when a full run finds no build; what went wrong, if anything."""
    if rebuild or (not quick and not BUILD_DIR.is_dir()):
        error = sam_build()
        if error:
            return f"sam build failed: {error}"
    return ""


@dataclass(frozen=True)
class Distribution:
    name: str
    requires: tuple[Requirement, ...]
    files: tuple[Path, ...]

    @property
    def size(self) -> int:
        return sum(file.stat().st_size for file in self.files if file.is_file())


def distributions(site: Path) -> dict[str, Distribution]:
    found: dict[str, Distribution] = {}
    for dist in metadata.distributions(path=[str(site)]):
        name = canonicalize_name(dist.metadata["Name"])
        requires = []
        for line in dist.requires or []:
            try:
                requires.append(Requirement(line))
            except InvalidRequirement:
                continue
        files = tuple(
            (site / str(entry)).resolve()
            for entry in dist.files or []
            if not str(entry).startswith("..")
        )
        found[name] = Distribution(name, tuple(requires), files)
    return found


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(
        requirement.marker.evaluate({**_TARGET_ENVIRONMENT, "extra": extra})
        for extra in (*extras, "")
    )


def closure(roots: Iterable[Requirement], installed: dict[str, Distribution]) -> set[str]:
    """Every installed distribution the roots need, extras followed."""
    needed: set[str] = set()
    pending = [(canonicalize_name(root.name), tuple(root.extras)) for root in roots]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen or name not in installed:
            continue
        seen.add((name, extras))
        needed.add(name)
        for requirement in installed[name].requires:
            if _applies(requirement, extras):
                pending.append((canonicalize_name(requirement.name), tuple(requirement.extras)))
    return needed


def layer_requirements() -> list[Requirement]:
    lines = (LAYER_DIR / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [
        Requirement(line.split("#", 1)[0].strip())
        for line in lines
        if line.split("#", 1)[0].strip()
    ]


def _mb(size: int) -> str:
    return f"{size / MB:.2f} MB" if size >= MB / 10 else f"{size / 1024:.1f} KB"


def run(*, quick: bool, note: str = "") -> list[Row]:
    """``note``: what ``ensure_build`` said, if the build failed."""
    if not BUILD_DIR.is_dir():
        reason = note or ("no .aws-sam/build (run make build)" if quick else "no build output")
        return [Row(SECTION, "artifacts under .aws-sam/build", reason, "", SKIP)]

    rows: list[Row] = []
    artifacts = sorted(path for path in BUILD_DIR.iterdir() if path.is_dir())
    sizes = {path.name: tree_bytes(path) for path in artifacts}
    total = sum(sizes.values())
    for name, size in sizes.items():
        rows.append(Row(SECTION, f"{name} (unzipped)", _mb(size), value=size, unit="bytes"))
    rows.append(
        Row(
            SECTION,
            "total of the artifacts (unzipped)" + (f" [{note}]" if note else ""),
            _mb(total),
            "reported, not a target: cold start is",
            value=total,
            unit="bytes",
        )
    )
    site = BUILD_DIR / LAYER / "python"
    if not site.is_dir():
        return rows
    boto3 = (site / "boto3").is_dir()
    botocore = (site / "botocore").is_dir()
    rows.append(
        Row(
            SECTION,
            "boto3 / botocore bundled in the layer",
            f"boto3: {'yes' if boto3 else 'no'}, botocore: {'yes' if botocore else 'no'}",
            "boto3 not bundled",
            verdict(not boto3),
            value=boto3,
            detail={"boto3": boto3, "botocore": botocore},
        )
    )
    installed = distributions(site)
    by_size = sorted(installed.values(), key=lambda dist: dist.size, reverse=True)
    owned = {file for dist in installed.values() for file in dist.files}
    loose = sum(
        Path(directory, name).stat().st_size
        for directory, _, files in os.walk(site)
        for name in files
        if Path(directory, name).resolve() not in owned
    )
    rows.append(
        Row(
            SECTION,
            "largest distributions in the layer",
            ", ".join(f"{dist.name} {dist.size / MB:.1f}" for dist in by_size[:5]) + " MB",
            detail={
                "bytes_by_distribution": {dist.name: dist.size for dist in by_size},
                "bytes_outside_distributions": loose,
            },
        )
    )
    requirements = layer_requirements()
    needed_now = closure(requirements, installed)
    no_requests = [
        *(req for req in requirements if canonicalize_name(req.name) != "requests"),
        Requirement("urllib3"),
    ]
    compiled = sum(path.stat().st_size for path in BUILD_DIR.rglob("*.pyc"))
    dropped = sorted(needed_now - closure(no_requests, installed))
    without_requests = sum(installed[name].size for name in dropped)
    for label, saved, detail in (
        (
            "what-if: source only (no .pyc; cold import: what they save)",
            compiled,
            {"pyc_bytes": compiled},
        ),
        (
            "what-if: that, and urllib3 directly instead of requests",
            compiled + without_requests,
            {"pyc_bytes": compiled, "dropped": dropped, "dropped_bytes": without_requests},
        ),
    ):
        total_then = total - saved
        rows.append(
            Row(
                SECTION,
                label,
                f"total {_mb(total_then)} (-{_mb(saved)})",
                value=total_then,
                unit="bytes",
                detail=detail,
            )
        )
    return rows
