"""docs/conformance/parley-v1.json, every group, with the SDK (docs/PROTOCOL.md §16).

The checker fails on a top-level group it does not know, so a group added to the
file (the `precision` branch adds negative vectors) fails here until the checker
learns it: add one ``@group("name")`` function in parley/conformance.py.
"""

from __future__ import annotations

import copy
import json

import pytest

from parley.conformance import METADATA_KEYS, Checker, check_file, main

from ._paths import CONFORMANCE_FILE

DOC = json.loads(CONFORMANCE_FILE.read_text())
GROUPS = [k for k in DOC if k not in METADATA_KEYS]


@pytest.fixture(scope="module")
def results() -> dict[str, object]:
    return {r.name: r for r in check_file(CONFORMANCE_FILE)}


def test_every_group_of_the_file_is_known_to_the_checker() -> None:
    unknown = [g for g in GROUPS if g not in Checker.GROUPS]
    assert unknown == [], f"the vector file has groups this checker does not know: {unknown}"


@pytest.mark.parametrize("name", GROUPS)
def test_group(name: str, results: dict[str, object]) -> None:
    r = results[name]
    assert r.failures == []  # type: ignore[attr-defined]
    assert r.passed > 0  # type: ignore[attr-defined]


# The mutation tests below run the checker on the document without the replay-window and epoch-skip
# message rejections (unless they change `message_rejections`): those vectors derive thousands of epoch
# keys each, most of a whole run's time. The control proves that the lighter document still passes every
# group, so a failure below is the change's doing; the full document runs in `results` and the CLI test.
def lighter(doc: dict[str, object], keep: str) -> dict[str, object]:
    if keep == "message_rejections":
        return doc
    rejections = [v for v in doc["message_rejections"] if not str(v["name"]).startswith(("window_", "epoch_"))]  # type: ignore[attr-defined, index]
    return {**doc, "message_rejections": rejections}


def test_control_the_lighter_document_passes_every_group() -> None:
    doc = lighter(copy.deepcopy(DOC), keep="")
    assert 0 < len(doc["message_rejections"]) < len(DOC["message_rejections"])  # type: ignore[arg-type]
    results = Checker(doc).run()
    assert [r.name for r in results] == GROUPS
    assert [r.name for r in results if not r.ok] == []


def test_an_unknown_group_fails_the_run() -> None:
    doc = lighter(copy.deepcopy(DOC), keep="")
    doc["future_group"] = [{"name": "x"}]
    results = {r.name: r for r in Checker(doc).run()}
    assert results["future_group"].failures and not results["future_group"].ok


@pytest.mark.parametrize(
    "path",
    [
        ("certificates", 0, "tbs"),
        ("messages", 3, "encrypted_payload"),
        ("messages", 5, "message_hash"),
        ("handshake", "steps", 1, "noise_message"),
        ("receipts", 1, "signature"),
        ("audit", "root"),
        ("revocations", "entries", 2, "entry_hash"),
        ("registry", "operator_requests", 0, "layout"),
        ("gateway_auth", 0, "layout"),
    ],
)
def test_a_changed_value_is_caught(path: tuple[object, ...]) -> None:
    doc = copy.deepcopy(DOC)
    node = doc
    for key in path[:-1]:
        node = node[key]  # type: ignore[index]
    value = node[path[-1]]  # type: ignore[index]
    node[path[-1]] = ("1" if value[0] != "1" else "2") + value[1:]  # type: ignore[index]
    results = {r.name: r for r in Checker(lighter(doc, keep=str(path[0]))).run()}
    assert results[str(path[0])].failures, f"changing {path} went unnoticed"


def test_a_changed_expectation_is_caught() -> None:
    doc = copy.deepcopy(DOC)
    doc["message_rejections"][1]["expect"] = "ok"
    doc["certificate_checks"][2]["expect"] = "ok"
    results = {r.name: r for r in Checker(doc).run()}
    assert results["message_rejections"].failures and results["certificate_checks"].failures


def test_the_command_line_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(CONFORMANCE_FILE)]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "FAIL" not in out
