"""What the conformance checkers (:mod:`parley.conformance`, :mod:`parley.memory.conformance`) share:
a group's result, one check per entry, and the two comparisons."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import ParleyError, code_of


class CheckFailed(AssertionError):
    pass


@dataclass
class GroupResult:
    name: str
    passed: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.passed > 0


class _Group:
    """Collects the checks of one group; each ``entry`` is one check."""

    def __init__(self, name: str) -> None:
        self.result = GroupResult(name)

    @contextmanager
    def entry(self, label: str) -> Iterator[None]:
        try:
            yield
            self.result.passed += 1
        except Exception as error:  # one failing entry never hides the others
            self.result.failures.append(f"{self.result.name}/{label}: {type(error).__name__}: {error}")


def _eq(what: str, got: bytes | str | int, want: str | int) -> None:
    got_norm = got.hex() if isinstance(got, (bytes, bytearray)) else got
    if got_norm != want:
        raise CheckFailed(f"{what} mismatch: got {str(got_norm)[:80]}, want {str(want)[:80]}")


def _expect(what: str, fn: Callable[[], object], want: str) -> None:
    try:
        fn()
        got = "ok"
    except ParleyError as error:
        got = error.code
    except Exception as error:
        got = f"error({code_of(error)}: {error})"
    if got != want:
        raise CheckFailed(f"{what}: expected {want}, got {got}")
