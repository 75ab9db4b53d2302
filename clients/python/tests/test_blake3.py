"""BLAKE3 hash mode against the official test vectors.

tests/vectors/blake3_test_vectors.json is a verbatim copy of
BLAKE3-team/BLAKE3 test_vectors/test_vectors.json (commit
77b257eee7da5cd608eaf6be8343d3a4c9776af2; CC0-1.0 / Apache-2.0). Inputs are the
repeating bytes 0..250; every case is checked at its full extended length and
at the default 32 bytes. The pure-Python fallback is always tested; the
``blake3`` package too when it is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parley import crypto
from parley._blake3_fallback import blake3 as fallback

CASES = json.loads((Path(__file__).parent / "vectors" / "blake3_test_vectors.json").read_text())["cases"]


def _input(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"len{c['input_len']}")
def test_fallback_matches_the_official_vectors(case: dict[str, object]) -> None:
    want = bytes.fromhex(str(case["hash"]))
    data = _input(int(case["input_len"]))  # type: ignore[call-overload]
    assert fallback(data, len(want)) == want
    assert fallback(data) == want[:32]


@pytest.mark.parametrize("case", CASES[::5], ids=lambda c: f"len{c['input_len']}")
def test_the_selected_backend_matches_too(case: dict[str, object]) -> None:
    want = bytes.fromhex(str(case["hash"]))[:32]
    assert crypto.blake3(_input(int(case["input_len"]))) == want  # type: ignore[call-overload]


def test_the_vector_file_covers_chunk_and_tree_boundaries() -> None:
    lengths = {int(c["input_len"]) for c in CASES}
    assert {0, 1, 64, 65, 1023, 1024, 1025, 2048, 2049, 8193, 102400} <= lengths


def test_accepts_any_bytes_like() -> None:
    assert fallback(bytearray(b"abc")) == fallback(b"abc") == fallback(memoryview(b"abc"))
