"""The signed revocation list (§15.6): what a consumer accepts, and freshness from the signed head."""

from __future__ import annotations

import dataclasses
import json

import pytest

from parley import crypto
from parley.errors import ParleyError
from parley.identity import TrustBundle
from parley.revocation import RevocationEntry, RevocationList, SignedHead, entry_hash, head_layout

from ._paths import CONFORMANCE_FILE

DOC = json.loads(CONFORMANCE_FILE.read_text())
R = DOC["revocations"]
REGISTRY_ID = bytes.fromhex(R["registry_id"])
ISSUER = crypto.SigningKey(bytes.fromhex(DOC["keys"]["issuer"]["ed25519_seed"]))
NOW = DOC["now_ms"]
ENTRIES = [RevocationEntry(e["version"], e["kind_value"], e["agent_id"], bytes.fromhex(e["serial"]), e["reason"], e["reason_text"], e["revoked_at_ms"]) for e in R["entries"]]


def head(version: int, previous_hash: bytes, issued_at_ms: int, signer: crypto.SigningKey = ISSUER, registry_id: bytes = REGISTRY_ID) -> SignedHead:
    from parley.identity import key_id

    kid = key_id(signer.public_key)
    return SignedHead(version, previous_hash, issued_at_ms, registry_id, kid, signer.sign(head_layout(registry_id, version, previous_hash, issued_at_ms, kid)))


def chain(entries: list[RevocationEntry]) -> bytes:
    h = bytes(32)
    for e in entries:
        h = entry_hash(REGISTRY_ID, h, e)
    return h


def fresh(clock: list[int] | None = None) -> RevocationList:
    c = clock or [NOW]
    return RevocationList(TrustBundle.from_json(DOC["trust_bundle"]), registry_id=REGISTRY_ID, max_age_ms=60_000, clock=lambda: c[0])


def code(fn: object) -> str:
    try:
        fn()  # type: ignore[operator]
        return "ok"
    except ParleyError as e:
        return e.code


def test_batches_apply_in_order_and_deltas_continue() -> None:
    copy = fresh()
    copy.apply(ENTRIES[:2], head(2, chain(ENTRIES[:2]), NOW))
    copy.apply(ENTRIES[2:], head(3, chain(ENTRIES), NOW))
    assert copy.version == 3 and len(copy) == 3
    assert copy.check("mallory", bytes(16), NOW) is not None and copy.check("alice", bytes(16), NOW) is None


def test_what_a_consumer_refuses() -> None:
    copy = fresh()
    assert code(lambda: copy.apply(ENTRIES[1:], head(3, chain(ENTRIES), NOW))) == "revocation_stale"  # a gap
    altered = [dataclasses.replace(ENTRIES[0], reason_text="other"), *ENTRIES[1:]]
    assert code(lambda: copy.apply(altered, head(3, chain(ENTRIES), NOW))) == "bad_signature"  # hash chain breaks
    rogue = crypto.SigningKey(bytes.fromhex(DOC["keys"]["rogue-issuer"]["ed25519_seed"]))
    assert code(lambda: copy.apply(ENTRIES, head(3, chain(ENTRIES), NOW, signer=rogue))) == "unknown_issuer"
    assert code(lambda: copy.apply(ENTRIES, head(3, chain(ENTRIES), NOW, registry_id=bytes(16)))) == "bad_signature"
    forged = dataclasses.replace(head(3, chain(ENTRIES), NOW), issued_at_ms=NOW + 1)  # signature over another time
    assert code(lambda: copy.apply(ENTRIES, forged)) == "bad_signature"
    assert copy.version == 0 and len(copy) == 0  # all or nothing


def test_freshness_is_the_signed_issued_at_not_the_arrival_time() -> None:
    clock = [NOW]
    copy = fresh(clock)
    assert code(lambda: copy.check("x", bytes(16), NOW)) == "revocation_stale"  # never updated: fail closed
    copy.apply(ENTRIES, head(3, chain(ENTRIES), NOW - 50_000))
    assert copy.check("x", bytes(16), NOW) is None
    clock[0] = NOW + 20_000
    copy.apply([], head(3, chain(ENTRIES), NOW - 55_000))  # a replayed older heartbeat refreshes nothing
    assert code(lambda: copy.check("x", bytes(16), NOW + 20_000)) == "revocation_stale"
    copy.apply([], head(3, chain(ENTRIES), NOW + 10_000_000))  # from the future: counted as now + skew
    assert copy.issued_at_ms == NOW + 20_000 + 60_000
    open_copy = RevocationList(TrustBundle.from_json(DOC["trust_bundle"]), fail_open=True, clock=lambda: NOW)
    assert open_copy.check("x", bytes(16), NOW) is None  # fail-open, explicitly configured


@pytest.mark.parametrize("kind,agent,serial", [(1, "", b""), (1, "a", bytes(16)), (2, "", bytes(15)), (3, "a", b"")])
def test_entry_subjects_are_checked(kind: int, agent: str, serial: bytes) -> None:
    with pytest.raises(ParleyError):
        entry_hash(REGISTRY_ID, bytes(32), RevocationEntry(1, kind, agent, serial, 0, "", 0))
