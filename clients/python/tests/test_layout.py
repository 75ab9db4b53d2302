"""§2 layouts: every encoder refuses wrong types and ranges (``malformed``), and encodes exactly."""

from __future__ import annotations

from typing import Any

import pytest

from parley.errors import ParleyError
from parley.layout import Layout

WRONG: list[Any] = [None, "1", 1.5, True, [], b"", -1]


def test_encodings() -> None:
    got = Layout("parley/v1/x").u8(1).u32(2).u64(3).i64(-1).fixed(b"ab", 2).var(b"c").str("é").list(["a", "b"]).bytes()
    assert got == (
        b"\x00\x00\x00\x0bparley/v1/x" + b"\x01" + b"\x00\x00\x00\x02" + (3).to_bytes(8, "big") + b"\xff" * 8 + b"ab" + b"\x00\x00\x00\x01c"
        + b"\x00\x00\x00\x02\xc3\xa9" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x01b"
    )  # fmt: skip


@pytest.mark.parametrize("method,bad", [(m, v) for m in ("u8", "u32", "u64", "i64") for v in WRONG if not (m == "i64" and v == -1)])
def test_integer_fields_refuse_wrong_types(method: str, bad: Any) -> None:
    with pytest.raises(ParleyError) as e:
        getattr(Layout("parley/v1/x"), method)(bad)
    assert e.value.code == "malformed"


@pytest.mark.parametrize("method,value", [("u8", 256), ("u32", 1 << 32), ("u64", 1 << 64), ("i64", 1 << 63), ("i64", -(1 << 63) - 1)])
def test_integer_fields_refuse_out_of_range(method: str, value: int) -> None:
    with pytest.raises(ParleyError):
        getattr(Layout("parley/v1/x"), method)(value)


@pytest.mark.parametrize("bad", [b"a", b"abc", "ab", None, 2])
def test_fixed_needs_the_exact_length(bad: Any) -> None:
    with pytest.raises(ParleyError):
        Layout("parley/v1/x").fixed(bad, 2)


@pytest.mark.parametrize("bad", [b"x", None, 1, "\ud800"])
def test_str_needs_valid_unicode(bad: Any) -> None:
    with pytest.raises(ParleyError):
        Layout("parley/v1/x").str(bad)


@pytest.mark.parametrize("domain", ["", "Parley/v1", "parley v1", "x" * 129, None])
def test_domain_tags_are_checked(domain: Any) -> None:
    with pytest.raises(ParleyError):
        Layout(domain)


def test_distinct_field_tuples_never_collide() -> None:
    assert Layout("parley/v1/x").str("ab").str("c").bytes() != Layout("parley/v1/x").str("a").str("bc").bytes()
    assert Layout("parley/v1/x").bytes() != Layout("parley/v1/y").bytes()
