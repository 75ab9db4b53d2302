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


# A changed pin (§15.9): the pinned bundle is the operator's root; a state saved while following another one is not used.

def _document(registry_id: bytes, version: int, issuers: list[tuple[crypto.SigningKey, int, int]], signer: crypto.SigningKey) -> bytes:
    from parley.trust_bundle import DocumentIssuer
    from parley.v1 import identity_pb2

    entries = sorted((DocumentIssuer(key_id(k.public_key), k.public_key, state, not_after) for k, state, not_after in issuers), key=lambda i: i.key_id)
    signer_kid = key_id(signer.public_key)
    doc = identity_pb2.SignedTrustBundle(registry_id=registry_id, version=version, issued_at_ms=V["now_ms"], signer_key_id=signer_kid,
                                         signature=signer.sign(trust_bundle_layout(registry_id, version, V["now_ms"], signer_kid, entries)))
    for i in entries:
        doc.issuers.add(key_id=i.key_id, public_key=i.public_key, state=i.state, not_after_ms=i.not_after_ms)  # type: ignore[arg-type]
    return doc.SerializeToString()


class _Registry:
    """Stands in for GetTrustBundle (the stub ``refresh`` builds) with a fixed list of documents."""

    def __init__(self, registry_id: bytes, documents: list[bytes]) -> None:
        self.registry_id, self.documents = registry_id, documents

    def stub(self, _channel: object) -> _Registry:
        return self

    async def GetTrustBundle(self, request, timeout: float = 0):  # noqa: N802 - the RPC's name
        from parley.v1 import identity_pb2, registry_pb2

        docs = [identity_pb2.SignedTrustBundle.FromString(d) for d in self.documents]
        return registry_pb2.GetTrustBundleResponse(registry_id=self.registry_id, current_version=len(docs), documents=[d for d in docs if d.version > request.after_version])


def _refresh(monkeypatch, follower: RegistryTrustBundle, registry: _Registry) -> list[int]:
    import asyncio

    from parley import trust_bundle

    monkeypatch.setattr(trust_bundle.registry_pb2_grpc, "RegistryServiceStub", registry.stub)
    follower._channel = object()  # type: ignore[assignment]  # refresh only checks that it was started
    try:
        return asyncio.run(follower.refresh())
    finally:
        follower._channel = None


def _follow(pinned: TrustBundle, state, events: list[dict], **more) -> RegistryTrustBundle:
    return RegistryTrustBundle("127.0.0.1:1", pinned, state_file=state, clock=lambda: V["now_ms"], on_event=events.append, **more)


def _saved_state(state) -> bytes:
    document = json.loads(state.read_text())["document"]
    return base64.urlsafe_b64decode(document + "=" * (-len(document) % 4))


def _pin(*names: str) -> TrustBundle:
    return TrustBundle.from_public_keys(*(h(V["keys"][n]["ed25519_public_key"]) for n in names))


def _vectors(*versions: str) -> list[bytes]:
    return [h(V["trust_bundles"][v]["encoded"]) for v in versions]


def test_the_pin_hash_is_of_the_keys_and_their_validity_not_of_the_json() -> None:
    from parley.identity import TrustedIssuer
    from parley.trust_bundle import pinned_bundle_hash

    pk1, pk2 = h(V["keys"]["k1"]["ed25519_public_key"]), h(V["keys"]["k2"]["ed25519_public_key"])
    a = TrustBundle([TrustedIssuer(key_id(pk1), pk1, 1_800_000_000_000), TrustedIssuer(key_id(pk2), pk2)])
    # The same vector as packages/protocol's trust-bundle-follower.spec.ts.
    assert pinned_bundle_hash(a).hex() == "2fb5aa835ec387f08f0dd18d673320925b8e614baee580c0348808a458bce17d"
    respelled = json.dumps({"issuers": list(reversed(a.to_json()["issuers"])), "version": 1}, indent=3)
    assert pinned_bundle_hash(TrustBundle.from_json(respelled)) == pinned_bundle_hash(a)
    others = [
        TrustBundle([TrustedIssuer(key_id(pk1), pk1, 1_800_000_000_001), TrustedIssuer(key_id(pk2), pk2)]),
        TrustBundle.from_public_keys(pk1, pk2),
        TrustBundle.from_public_keys(pk2),
    ]
    assert len({pinned_bundle_hash(b) for b in [a, *others]}) == 4


def test_the_same_pin_restores_the_saved_state_which_records_it(tmp_path, monkeypatch) -> None:
    from parley.trust_bundle import decode_followed_state, pinned_bundle_hash

    state, events = tmp_path / "bundle.json", []
    first = _follow(_pin("k1"), state, events, registry_id=h(V["registry_id"]))
    assert _refresh(monkeypatch, first, _Registry(h(V["registry_id"]), _vectors("v1", "v2", "v3"))) == [1, 2, 3]
    pin, document = decode_followed_state(_saved_state(state))
    assert pin == pinned_bundle_hash(_pin("k1")) and document == _vectors("v3")[0]
    # The same pinned bundle, read from JSON written otherwise.
    same = TrustBundle.from_json('{ "issuers": ' + json.dumps(_pin("k1").to_json()["issuers"]) + ',\n "version": 1 }')
    events.clear()
    restarted = _follow(same, state, events)
    assert events == [{"kind": "restored", "version": 3}]
    assert restarted.version == 3 and restarted.get(h(V["keys"]["k2"]["key_id"])) is not None


def test_a_changed_pin_ignores_the_saved_state_reports_it_and_follows_from_the_new_pin(tmp_path, monkeypatch) -> None:
    from parley.trust_bundle import ACTIVE, decode_followed_state, pinned_bundle_hash

    state, events = tmp_path / "bundle.json", []
    first = _follow(_pin("k1"), state, events)
    _refresh(monkeypatch, first, _Registry(h(V["registry_id"]), _vectors("v1", "v2", "v3")))
    assert first.version == 3
    # The agent is moved to another registry: a new pin, no registry id given (the saved one must not be adopted).
    other_id, kb = bytes(range(16)), crypto.SigningKey.generate()
    pin_b = TrustBundle.from_public_keys(kb.public_key)
    events.clear()
    moved = _follow(pin_b, state, events)
    assert [e["kind"] for e in events] == ["pin_changed"], events
    assert events == [{"kind": "pin_changed", "version": 3, "from": pinned_bundle_hash(_pin("k1")).hex(), "to": pinned_bundle_hash(pin_b).hex(),
                       "detail": events[0]["detail"]}]
    assert "another pinned bundle" in str(events[0]["detail"])
    text = json.dumps(events)
    for public_key in [kb.public_key, *(h(k["ed25519_public_key"]) for k in V["keys"].values())]:
        assert public_key.hex() not in text and base64.urlsafe_b64encode(public_key).rstrip(b"=").decode() not in text
    assert moved.version == 0 and moved._registry_id is None
    assert moved.get(h(V["keys"]["k1"]["key_id"])) is None and moved.get(key_id(kb.public_key)) is not None
    b1 = _document(other_id, 1, [(kb, ACTIVE, 0)], kb)
    assert _refresh(monkeypatch, moved, _Registry(other_id, [b1])) == [1]
    assert moved._registry_id == other_id
    # The next accepted document replaced the saved state: a restart with the new pin restores it.
    assert decode_followed_state(_saved_state(state)) == (pinned_bundle_hash(pin_b), b1)
    events.clear()
    assert _follow(pin_b, state, events).version == 1
    assert events == [{"kind": "restored", "version": 1}]


def test_an_operators_new_pin_after_an_incident_outranks_the_saved_chain(tmp_path, monkeypatch) -> None:
    from parley.trust_bundle import ACTIVE

    registry_id, k1, k3 = bytes(range(16)), crypto.SigningKey.generate(), crypto.SigningKey.generate()
    v1 = _document(registry_id, 1, [(k1, ACTIVE, 0)], k1)
    v2 = _document(registry_id, 2, [(k3, ACTIVE, 0)], k3)  # k1 was compromised: the registry re-keyed
    state, events = tmp_path / "bundle.json", []
    _refresh(monkeypatch, _follow(TrustBundle.from_public_keys(k1.public_key), state, events, registry_id=registry_id), _Registry(registry_id, [v1]))
    events.clear()
    after = _follow(TrustBundle.from_public_keys(k3.public_key), state, events, registry_id=registry_id)
    assert [e["kind"] for e in events] == ["pin_changed"]
    assert after.get(key_id(k1.public_key)) is None
    assert _refresh(monkeypatch, after, _Registry(registry_id, [v1, v2])) == [2]
    assert after.get(key_id(k1.public_key)) is None


def test_a_state_file_written_before_the_pin_was_recorded(tmp_path, monkeypatch) -> None:
    """Used (and written again with the pin) when a pinned key signed its document; otherwise a changed pin:
    only the newest document was saved, so a chain anchored further back cannot be checked."""
    from parley.trust_bundle import decode_followed_state, pinned_bundle_hash

    def old_file(name: str, version: str) -> object:
        path = tmp_path / name
        path.write_text(json.dumps({"version": 1, "type": "parley-followed-trust-bundle", "registry_id": V["registry_id"],
                                    "bundle_version": V["trust_bundles"][version]["version"], "saved_at_ms": 0,
                                    "document": base64.urlsafe_b64encode(_vectors(version)[0]).rstrip(b"=").decode()}))
        return path

    signer = V["trust_bundles"]["v2"]["signer"]
    # Signed by a pinned key: the anchor a fresh follow would accept.
    events: list[dict] = []
    kept = _follow(_pin(signer), old_file("signed-by-pin.json", "v2"), events)
    assert events == [{"kind": "restored", "version": 2}] and kept.version == 2
    assert decode_followed_state(_saved_state(tmp_path / "signed-by-pin.json")) == (pinned_bundle_hash(_pin(signer)), _vectors("v2")[0])
    # Signed by a key the pin does not hold (the v3 signer, after a rotation from the pinned key).
    pinned = _pin(V["trust_bundles"]["v1"]["signer"])
    assert V["trust_bundles"]["v3"]["signer"] != V["trust_bundles"]["v1"]["signer"]
    events = []
    rotated = _follow(pinned, old_file("rotated.json", "v3"), events)
    assert [e["kind"] for e in events] == ["pin_changed"], events
    assert events == [{"kind": "pin_changed", "version": 3, "from": None, "to": pinned_bundle_hash(pinned).hex(), "detail": events[0]["detail"]}]
    assert "records no pinned bundle" in str(events[0]["detail"])
    assert rotated.version == 0
    assert _refresh(monkeypatch, rotated, _Registry(h(V["registry_id"]), _vectors("v1", "v2", "v3"))) == [1, 2, 3]
    assert decode_followed_state(_saved_state(tmp_path / "rotated.json"))[0] == pinned_bundle_hash(pinned)
    # Another registry's key pinned: not used either.
    events = []
    elsewhere = _follow(TrustBundle.from_public_keys(crypto.SigningKey.generate().public_key), old_file("elsewhere.json", "v2"), events)
    assert [e["kind"] for e in events] == ["pin_changed"] and elsewhere.version == 0


def test_a_saved_state_with_the_pin_cut_short_is_reported_and_not_used(tmp_path, monkeypatch) -> None:
    state, events = tmp_path / "bundle.json", []
    _refresh(monkeypatch, _follow(_pin("k1"), state, events), _Registry(h(V["registry_id"]), _vectors("v1")))
    saved = json.loads(state.read_text())
    saved["document"] = base64.urlsafe_b64encode(_saved_state(state)[:-1]).rstrip(b"=").decode()
    state.write_text(json.dumps(saved))
    events.clear()
    assert _follow(_pin("k1"), state, events).version == 0
    assert [(e["kind"], e["code"]) for e in events] == [("restore_failed", "malformed")] and "truncated" in str(events[0]["detail"])
