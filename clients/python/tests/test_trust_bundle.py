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
