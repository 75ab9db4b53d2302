"""docs/conformance/parley-v1-trust.json with the SDK (docs/PROTOCOL.md §15.3, §15.9, §15.11), and the
follower's saved state. Every expectation comes from the file."""

from __future__ import annotations

import base64
import json

import pytest

from parley import crypto
from parley.errors import IdentityError
from parley.identity import TrustBundle, key_id
from parley.layout import Layout
from parley.registry import agent_request_layout, enrolment_layout, join_token_hash
from parley.trust_bundle import RETIRED, RegistryTrustBundle, TrustBundleChain, decode_document, trust_bundle_layout

from ._paths import TRUST_CONFORMANCE_FILE

V = json.loads(TRUST_CONFORMANCE_FILE.read_text())
KNOWN = {"format", "version", "protocol", "section", "generated_by", "notes", "now_ms", "keys", "registry_id", "trust_bundles", "extra_documents", "trust_bundle_checks", "enrolment", "agent_request"}
STATE = {"prepared": 1, "active": 2, "retired": 3}
DOCS = {**V["trust_bundles"], **V["extra_documents"]}
h = bytes.fromhex


def test_no_unknown_group() -> None:
    assert set(V) <= KNOWN, set(V) - KNOWN


def test_keys() -> None:
    for k in V["keys"].values():
        key = crypto.SigningKey(h(k["ed25519_seed"]))
        assert key.public_key.hex() == k["ed25519_public_key"]
        assert key_id(key.public_key).hex() == k["key_id"]


@pytest.mark.parametrize("name", sorted(DOCS))
def test_document_layout_signature_and_decoding(name: str) -> None:
    d = DOCS[name]
    raw = Layout("parley/v1/trust-bundle").fixed(h(d["registry_id"]), 16).u64(d["version"]).i64(d["issued_at_ms"]).fixed(h(d["signer_key_id"]), 16).u32(len(d["issuers"]))
    for i in d["issuers"]:
        raw.fixed(h(i["key_id"]), 16).fixed(h(i["public_key"]), 32).u8(STATE[i["state"]]).i64(i["not_after_ms"])
    assert raw.bytes().hex() == d["layout"]
    assert len(raw.bytes()) == 78 + 57 * len(d["issuers"])
    doc = decode_document(h(d["encoded"]))
    assert doc.layout().hex() == d["layout"]
    assert trust_bundle_layout(doc.registry_id, doc.version, doc.issued_at_ms, doc.signer_key_id, doc.issuers).hex() == d["layout"]
    assert crypto.ed25519_verify(h(d["signature"]), raw.bytes(), h(V["keys"][d["signer"]]["ed25519_public_key"])) is (name != "forged_v2")


@pytest.mark.parametrize("check", V["trust_bundle_checks"], ids=[c["name"] for c in V["trust_bundle_checks"]])
def test_follower_rule(check: dict) -> None:
    pinned = TrustBundle.from_public_keys(*(h(V["keys"][k]["ed25519_public_key"]) for k in check["pinned"]))
    chain = TrustBundleChain(h(V["registry_id"]), pinned)
    if check["accept_first"]:
        chain.advance([h(DOCS[n]["encoded"]) for n in check["accept_first"]], V["now_ms"])
    got = "ok"
    try:
        chain.advance([h(DOCS[n]["encoded"]) for n in check["documents"]], V["now_ms"])
    except IdentityError as error:
        got = error.code
    assert (got, chain.version) == (check["expect"], check["version"])


def test_enrolment_and_agent_request() -> None:
    e = V["enrolment"]
    token_hash = join_token_hash(h(e["token_id"]), h(e["token_secret"]))
    assert token_hash.hex() == e["token_hash"]
    assert e["token_text"] == "pjt1." + e["token_id"] + "." + base64.urlsafe_b64encode(h(e["token_secret"])).rstrip(b"=").decode()
    key = crypto.SigningKey(h(e["identity_seed"]))
    layout = enrolment_layout(h(e["registry_id"]), h(e["token_id"]), token_hash, e["agent_id"], key.public_key, e["timestamp_ms"])
    assert layout.hex() == e["layout"]
    assert crypto.ed25519_verify(h(e["signature"]), layout, key.public_key)
    a = V["agent_request"]
    signed = agent_request_layout(h(a["registry_id"]), a["path"], h(a["request"]), a["timestamp_ms"], h(a["nonce"]), a["agent_id"], h(a["serial"]))
    assert signed.hex() == a["layout"]
    signature = base64.urlsafe_b64decode(a["metadata"]["parley-agent-signature"] + "==")
    assert crypto.ed25519_verify(signature, signed, crypto.SigningKey(h(a["signer_seed"])).public_key)


def test_follower_state_survives_a_restart_and_a_live_bundle_follows(tmp_path) -> None:
    pinned = TrustBundle.from_public_keys(h(V["keys"]["k1"]["ed25519_public_key"]))
    state = tmp_path / "bundle.json"
    follower = RegistryTrustBundle("127.0.0.1:1", pinned, registry_id=h(V["registry_id"]), state_file=state, clock=lambda: V["now_ms"])
    assert follower.version == 0 and follower.get(h(V["keys"]["k2"]["key_id"])) is None
    chain = TrustBundleChain(h(V["registry_id"]), pinned)
    chain.advance([h(V["trust_bundles"][v]["encoded"]) for v in ("v1", "v2", "v3")], V["now_ms"])
    follower._chain = chain  # as a refresh leaves it
    follower._save()
    assert follower.get(h(V["keys"]["k2"]["key_id"])) is not None  # the live view follows the chain
    retired = follower.get(h(V["keys"]["k1"]["key_id"]))
    assert retired is not None and retired.not_after_ms is not None
    restarted = RegistryTrustBundle("127.0.0.1:1", pinned, state_file=state)
    assert restarted.version == 3
    assert [i.state for i in chain.document.issuers].count(RETIRED) == 1
    state.write_text(state.read_text().replace('"bundle_version": 3', '"bundle_version": 3 '))
    saved = json.loads(state.read_text())
    saved["document"] = saved["document"][:-4] + ("AAAA" if not saved["document"].endswith("AAAA") else "BBBB")
    state.write_text(json.dumps(saved))
    assert RegistryTrustBundle("127.0.0.1:1", pinned, state_file=state).version == 0  # a tampered file is not used


def test_a_follower_anchors_past_documents_signed_by_a_pinned_key_beyond_its_not_after_ms() -> None:
    """A bundle pinned during a rotation's grace lists the old key RETIRED until not_after_ms; a follower that
    starts after that skips the versions the old key signed, as it skips unknown signers, and anchors at the first
    one a still-valid pinned key signed (it refused the whole batch with ``expired`` and never followed)."""
    from parley.trust_bundle import ACTIVE, PREPARED, DocumentIssuer
    from parley.v1 import identity_pb2

    registry_id, day, t0 = bytes(range(16)), 86_400_000, 1_700_000_000_000
    k1, k2 = crypto.SigningKey.generate(), crypto.SigningKey.generate()

    def document(version: int, issuers: list[tuple[crypto.SigningKey, int, int]], signer: crypto.SigningKey) -> bytes:
        entries = sorted((DocumentIssuer(key_id(k.public_key), k.public_key, state, not_after) for k, state, not_after in issuers), key=lambda i: i.key_id)
        signer_kid = key_id(signer.public_key)
        doc = identity_pb2.SignedTrustBundle(registry_id=registry_id, version=version, issued_at_ms=t0, signer_key_id=signer_kid,
                                             signature=signer.sign(trust_bundle_layout(registry_id, version, t0, signer_kid, entries)))
        for i in entries:
            doc.issuers.add(key_id=i.key_id, public_key=i.public_key, state=i.state, not_after_ms=i.not_after_ms)  # type: ignore[arg-type]
        return doc.SerializeToString()

    v1 = document(1, [(k1, ACTIVE, 0)], k1)
    v2 = document(2, [(k1, ACTIVE, 0), (k2, PREPARED, 0)], k1)
    v3 = document(3, [(k2, ACTIVE, 0), (k1, RETIRED, t0 + 10 * day)], k2)
    v4 = document(4, [(k2, ACTIVE, 0)], k2)
    pinned = decode_document(v3).trust_bundle()  # printed during the grace: K1 until t0 + 10 days, and K2
    chain = TrustBundleChain(registry_id, pinned)
    assert chain.advance([v1, v2, v3, v4], t0 + 11 * day) == [3, 4]
    # Only expired pinned keys signed: still refused, as expired.
    only_old = TrustBundleChain(registry_id, decode_document(v3).trust_bundle())
    with pytest.raises(IdentityError) as refused:
        only_old.advance([v1, v2], t0 + 11 * day)
    assert refused.value.code == "expired"
