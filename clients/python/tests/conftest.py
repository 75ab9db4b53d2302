"""Shared pytest configuration (paths live in tests/_paths.py).

``deployment``: one real registry and TLS gateway for every process test of the run (test_e2e_gateway.py,
test_e2e_memory.py), started on first use and stopped at the end.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .processes import Deployment


@pytest.fixture(scope="session")
def deployment() -> Iterator[Deployment]:
    with tempfile.TemporaryDirectory(prefix="parley-py-e2e-") as tmp:
        d = Deployment(Path(tmp)).start()
        try:
            yield d
        finally:
            d.stop()
