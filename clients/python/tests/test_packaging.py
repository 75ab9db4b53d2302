"""`pip install ./clients/python` works with Debian's /usr/bin/python3: into a venv that sees Debian's
site-packages (PyNaCl, grpcio, protobuf, setuptools), offline, without touching the system."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ._paths import CLIENT_DIR, CONFORMANCE_FILE


@pytest.mark.process  # venv + pip: seconds of processes, the test-load target's
@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX shell environment")
def test_pip_installs_the_package_into_a_venv_and_it_works(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("tests", "bench", "build", "*.egg-info", "__pycache__", "node_modules"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, capture_output=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index", "--no-deps", "-q", str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    python = str(venv / "bin" / "python")
    probe = subprocess.run(
        [python, "-c", "import parley, pathlib; p = pathlib.Path(parley.__file__).parent; print(p); assert (p / 'py.typed').exists(); assert (p / 'v1' / 'gateway_pb2.pyi').exists()"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert str(venv) in probe.stdout  # the installed copy, not the source tree
    check = subprocess.run([python, "-m", "parley.conformance", str(CONFORMANCE_FILE)], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and "0 failed" in check.stdout, check.stdout + check.stderr
