"""``pip install ./client`` in a clean virtualenv: the package installs with botocore and
requests as its only dependencies, and imports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from local.stack import ROOT

CHECK = """
import importlib.metadata as metadata
from capsule_connector_client import Connector
declared = metadata.requires("capsule-connector-client") or []
requires = sorted(r.split(">")[0].split("=")[0].strip() for r in declared)
assert requires == ["botocore", "requests"], requires
connector = Connector("https://abc123.execute-api.eu-west-1.amazonaws.com")
print(connector.region, metadata.version("capsule-connector-client"))
"""


def index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not index_reachable(), reason="no network: pip cannot fetch botocore")
def test_pip_install_client_works_in_a_clean_virtualenv(tmp_path: Path) -> None:
    source = tmp_path / "client"  # a copy: building writes egg-info next to the sources
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"

    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    ran = subprocess.run(
        [str(python), "-c", CHECK],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "PATH": "/usr/bin:/bin"},
    )

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["eu-west-1", "0.1.0"]
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    # botocore's and requests' own dependencies, nothing else
    assert names <= {
        "capsule-connector-client",
        "botocore",
        "requests",
        "jmespath",
        "python-dateutil",
        "six",
        "urllib3",
        "certifi",
        "charset-normalizer",
        "idna",
        "pip",
        "setuptools",  # what python3.11's venv seeds; 3.12 and later seed pip alone
    }, names
