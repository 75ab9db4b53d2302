"""Checks docs/conformance/parley-v1.json (docs/PROTOCOL.md §16) with this SDK.

Every group recomputes its byte strings from the inputs, re-signs (Ed25519 is
deterministic) and verifies every signature, replays the handshake with the
fixed keys, re-seals and opens every message, reproduces every expected
rejection code and recomputes the audit chain, tree and proofs.

A top-level key that is neither metadata nor a known group FAILS the run, so a
group added to the file is never skipped silently. Adding a group is one
function decorated with ``@group("name")``.

Run it: ``python3 -m parley.conformance docs/conformance/parley-v1.json``
(exit 0 only when every check passed and at least one ran). The same command checks the shared-memory
file, ``docs/conformance/parley-v1-memory.json``, with :mod:`parley.memory.conformance`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import audit, crypto, registry, revocation
from .disclosure import Disclosure, verify_disclosure
from .encoding import b64url_encode
from .envelope import SecureMessage, envelope_ad, envelope_mac_input, envelope_signed_bytes, payload_commitment
from ._checks import CheckFailed, GroupResult, _eq, _expect, _Group
from .envelope import message_hash
from .handshake import HandshakeConfig, HandshakeFrame, HandshakePayload, InitiatorHandshake, ResponderHandshake, handshake_frame_digest, identity_binding, noise_prologue
from .identity import StaticRevocations, TrustBundle, certificate_tbs, decode_certificate, key_id, verify_certificate
from .noise import MAX_NONCE
from .relay import DeliveryReceipt, SessionReject, gateway_auth_layout, gateway_send_layout, receipt_layout, session_reject_layout
from .session import LocalIdentity, Session
from .v1 import audit_pb2, message_pb2

#: key_check (§16, test-only): ENCRYPT(k(e), 2^64−3, "", 0³²), a nonce no message, REKEY or mk(e) uses.
KEY_CHECK_NONCE = MAX_NONCE - 2

#: Top-level keys that are not check groups.
METADATA_KEYS = frozenset({"format", "version", "protocol", "generated_by", "notes", "now_ms"})


class Checker:
    """Runs every group of one vector file."""

    GROUPS: dict[str, Callable[[Checker, _Group], None]] = {}

    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.now: int = int(document["now_ms"])
        self.keys = {name: crypto.SigningKey(bytes.fromhex(k["ed25519_seed"])) for name, k in document.get("keys", {}).items()}
        self.trust = TrustBundle.from_json(document["trust_bundle"])
        self.certs = {c["name"]: decode_certificate(bytes.fromhex(c["encoded"])) for c in document.get("certificates", [])}

    def run(self) -> list[GroupResult]:
        results = []
        for name in self.doc:
            if name in METADATA_KEYS:
                continue
            handler = self.GROUPS.get(name)
            g = _Group(name)
            if handler is None:
                g.result.failures.append(f"{name}: unknown vector group (this checker must learn it; nothing is skipped silently)")
            else:
                try:
                    handler(self, g)
                except Exception as error:
                    g.result.failures.append(f"{name}: {type(error).__name__}: {error}")
                if g.result.passed == 0 and not g.result.failures:
                    g.result.failures.append(f"{name}: no entries")
            results.append(g.result)
        return results

    # --- shared fixtures --------------------------------------------------------------------

    def identity(self, name: str) -> LocalIdentity:
        return LocalIdentity(name, self.keys[name], self.certs[name])

    def sessions(self, revocations: StaticRevocations | None = None, clock: list[int] | None = None) -> tuple[Session, Session]:
        """The vectors' handshake replayed with its fixed keys: (alice initiator, bob responder).

        ``revocations`` is consulted by the sessions (not by this handshake: the vectors' revocation
        data is empty during it, §16); ``clock`` is a one-element list the sessions read their time from.
        """
        h = self.doc["handshake"]
        now = clock if clock is not None else [self.now]

        def config(name: str) -> HandshakeConfig:
            return HandshakeConfig(identity=self.identity(name), trust_bundle=self.trust, rekey_threshold=h["rekey_threshold"], clock=lambda: now[0])

        i, r = h["initiator"], h["responder"]
        init, f1 = InitiatorHandshake.start(
            config(h["initiator_id"]),
            h["responder_id"],
            session_id=bytes.fromhex(h["session_id"]),
            static_private=bytes.fromhex(i["static_private"]),
            fixed_ephemeral_for_testing_only=bytes.fromhex(i["ephemeral_private"]),
        )
        resp, f2 = ResponderHandshake.accept(
            config(h["responder_id"]), f1, static_private=bytes.fromhex(r["static_private"]), fixed_ephemeral_for_testing_only=bytes.fromhex(r["ephemeral_private"])
        )
        f3, alice = init.receive(f2)
        bob = resp.receive(f3)
        self._frames = (f1, f2, f3)
        if revocations is not None:
            alice._revocations = bob._revocations = revocations
        return alice, bob


def group(name: str) -> Callable[[Callable[[Checker, _Group], None]], Callable[[Checker, _Group], None]]:
    """Registers a group checker."""

    def register(fn: Callable[[Checker, _Group], None]) -> Callable[[Checker, _Group], None]:
        Checker.GROUPS[name] = fn
        return fn

    return register


@group("keys")
def _keys(c: Checker, g: _Group) -> None:
    for name, k in c.doc["keys"].items():
        with g.entry(name):
            _eq("public key", c.keys[name].public_key, k["ed25519_public_key"])
            _eq("key id", key_id(c.keys[name].public_key), k["key_id"])


@group("trust_bundle")
def _trust_bundle(c: Checker, g: _Group) -> None:
    with g.entry("json"):
        if c.trust.to_json() != c.doc["trust_bundle"]:
            raise CheckFailed("the bundle does not round-trip")
        issuer = c.trust.issuers()[0]
        _eq("issuer key", issuer.public_key, c.doc["keys"]["issuer"]["ed25519_public_key"])


@group("certificates")
def _certificates(c: Checker, g: _Group) -> None:
    for v in c.doc["certificates"]:
        with g.entry(v["name"]):
            cert = decode_certificate(bytes.fromhex(v["encoded"]))
            for f in ("version", "agent_id", "agent_type", "valid_from_ms", "valid_until_ms"):
                _eq(f, getattr(cert, f), v[f])
            if list(cert.capabilities) != v["capabilities"]:
                raise CheckFailed("capabilities mismatch")
            for f in ("serial", "identity_public_key", "issuer_key_id", "signature"):
                _eq(f, bytes(getattr(cert, f)), v[f])
            tbs = certificate_tbs(cert)
            _eq("tbs", tbs, v["tbs"])
            issuer = next(name for name, k in c.doc["keys"].items() if k["key_id"] == v["issuer_key_id"])
            _eq("issuer signature", c.keys[issuer].sign(tbs), v["signature"])
            if not crypto.ed25519_verify(bytes(cert.signature), tbs, c.keys[issuer].public_key):
                raise CheckFailed("issuer signature does not verify")
            _eq("encoding", cert.SerializeToString(), v["encoded"])


def _revoked(v: dict[str, Any]) -> StaticRevocations:
    r = v.get("revoked") or {}
    return StaticRevocations(agent_ids=set(r.get("agent_ids", [])), serials={bytes.fromhex(x) for x in r.get("serials", [])})


@group("certificate_checks")
def _certificate_checks(c: Checker, g: _Group) -> None:
    for v in c.doc["certificate_checks"]:
        with g.entry(v["name"]):
            revocations = _revoked(v)
            expected = v.get("expected_agent_id")
            _expect(
                "decode and verify",
                lambda: verify_certificate(decode_certificate(bytes.fromhex(v["certificate"])), c.trust, v["at_ms"], expected_agent_id=expected, revocations=revocations),
                v["expect"],
            )


@group("trust_bundle_checks")
def _trust_bundle_checks(c: Checker, g: _Group) -> None:
    alice = c.certs["alice"]
    for v in c.doc["trust_bundle_checks"]:
        with g.entry(v["name"]):
            _expect("parse", lambda: TrustBundle.from_json(v["json"]), v["expect"])
            if "certificate_expect" in v:
                bundle = TrustBundle.from_json(v["json"])
                _expect("certificate under it", lambda: verify_certificate(alice, bundle, c.now), v["certificate_expect"])


@group("handshake")
def _handshake(c: Checker, g: _Group) -> None:
    h = c.doc["handshake"]
    sid = bytes.fromhex(h["session_id"])
    with g.entry("prologue"):
        _eq("prologue", noise_prologue(sid, h["initiator_id"], h["responder_id"], h["rekey_threshold"]), h["prologue"])
        _eq("protocol", h["protocol_name"], "Noise_XX_25519_ChaChaPoly_BLAKE2b")
    with g.entry("keys"):
        for role in ("initiator", "responder"):
            _eq(f"{role} static", crypto.x25519_keypair(bytes.fromhex(h[role]["static_private"]))[1], h[role]["static_public"])
            _eq(f"{role} ephemeral", crypto.x25519_keypair(bytes.fromhex(h[role]["ephemeral_private"]))[1], h[role]["ephemeral_public"])
    alice, bob = c.sessions()
    frames = c._frames
    for i, step in enumerate(h["steps"]):
        with g.entry(f"step{step['step']}"):
            f = frames[i]
            _eq("noise_message", bytes(f.noise_message), step["noise_message"])
            _eq("frame", f.SerializeToString(), step["frame"])
            _eq("frame digest", handshake_frame_digest(f), step["frame_digest"])
            _eq("sender", f.sender_id, step["sender_id"])
            _eq("recipient", f.recipient_id, step["recipient_id"])
    for role, step_index, signer, static in (("responder", 1, h["responder_id"], h["responder"]["static_public"]), ("initiator", 2, h["initiator_id"], h["initiator"]["static_public"])):
        with g.entry(f"binding/{role}"):
            b = h["bindings"][role]
            layout = identity_binding(sid, signer, 1 if role == "initiator" else 2, bytes.fromhex(static))
            _eq("binding layout", layout, b["layout"])
            _eq("binding signature", c.keys[signer].sign(layout), b["signature"])
            payload = HandshakePayload.FromString(bytes.fromhex(h["steps"][step_index]["payload"]))
            _eq("payload signature", bytes(payload.identity_signature), b["signature"])
            _eq("payload certificate", payload.certificate.SerializeToString(), c.certs[signer].SerializeToString().hex())
    with g.entry("handshake_hash"):
        _eq("initiator h", alice.handshake_hash, h["handshake_hash"])
        _eq("responder h", bob.handshake_hash, h["handshake_hash"])
    for direction, sender, receiver in (("initiator_to_responder", alice, bob), ("responder_to_initiator", bob, alice)):
        for epoch in h["transport"][direction]:
            with g.entry(f"{direction}/epoch{epoch['epoch']}"):
                for keys in (sender._send, receiver._receive):
                    k, derived = keys.lookup(epoch["epoch"])
                    _eq("k(e)", k.cipher.unsafe_key(), epoch["key"])
                    _eq("mk(e)", bytes(k.mac_key), epoch["hmac_key"])
                    _eq("key_check", k.cipher.encrypt_at(KEY_CHECK_NONCE, b"", bytes(32)), epoch["key_check"])
                    type(keys).discard(derived)


@group("messages")
def _messages(c: Checker, g: _Group) -> None:
    alice, bob = c.sessions()
    by_role = {"initiator_to_responder": (alice, bob), "responder_to_initiator": (bob, alice)}
    for v in c.doc["messages"]:
        with g.entry(v["name"]):
            sender, receiver = by_role[v["direction"]]
            payload = bytes.fromhex(v["payload"])
            salt = bytes.fromhex(v["salt"])
            _eq("commitment", payload_commitment(salt, payload), v["commitment"])
            counter = sender.allocate_counter()
            _eq("nonce", counter, v["nonce"])
            _eq("epoch", sender._send.epoch_of(counter), v["epoch"])
            sealed = sender.seal_at(counter, payload, v["timestamp_ms"], salt=salt)
            e = sealed.envelope
            _eq("ad", envelope_ad(e), v["ad"])
            _eq("encrypted_payload", bytes(e.encrypted_payload), v["encrypted_payload"])
            _eq("mac_input", envelope_mac_input(e), v["mac_input"])
            _eq("auth_tag", bytes(e.auth_tag), v["auth_tag"])
            _eq("signed", envelope_signed_bytes(e), v["signed"])
            _eq("signature", bytes(e.signature), v["signature"])
            _eq("message_hash", sealed.message_hash, v["message_hash"])
            _eq("envelope", e.SerializeToString(), v["envelope"])
            opened = receiver.open(SecureMessage.FromString(bytes.fromhex(v["envelope"])), c.now)
            _eq("opened payload", opened.payload_bytes, v["payload"])
            _eq("type", opened.payload.type, v["type_value"])
            _eq("type name", message_pb2.MessageType.Name(opened.payload.type), v["type"])
            if opened.content != v["content"]:
                raise CheckFailed("content differs")
            opened.commit()


@group("message_rejections")
def _message_rejections(c: Checker, g: _Group) -> None:
    envelopes = {m["name"]: m["envelope"] for m in c.doc["messages"]}
    for v in c.doc["message_rejections"]:
        with g.entry(v["name"]):
            revocations = StaticRevocations()
            clock = [c.now]
            alice, bob = c.sessions(revocations, clock)
            receiver = bob if v["receiver"] == "responder" else alice
            for name in v["accept_first"]:
                receiver.open(SecureMessage.FromString(bytes.fromhex(envelopes[name])), c.now).commit()
            for hex_envelope in v.get("accept_first_envelopes", []):
                receiver.open(SecureMessage.FromString(bytes.fromhex(hex_envelope)), c.now).commit()
            receiver._revocations = _revoked(v)
            at = int(v.get("open_at_ms", c.now))
            clock[0] = at
            envelope = SecureMessage.FromString(bytes.fromhex(v["envelope"]))
            _expect("open", lambda: receiver.open(envelope, at), v["expect"])


@group("handshake_rejections")
def _handshake_rejections(c: Checker, g: _Group) -> None:
    h = c.doc["handshake"]
    i, r = h["initiator"], h["responder"]
    for v in c.doc["handshake_rejections"]:
        with g.entry(v["name"]):
            revocations = _revoked(v)

            def config(name: str) -> HandshakeConfig:
                return HandshakeConfig(identity=c.identity(name), trust_bundle=c.trust, revocations=revocations, rekey_threshold=h["rekey_threshold"], clock=lambda: c.now)

            def responder() -> tuple[ResponderHandshake, Any]:
                return ResponderHandshake.accept(
                    config(h["responder_id"]), f1, static_private=bytes.fromhex(r["static_private"]), fixed_ephemeral_for_testing_only=bytes.fromhex(r["ephemeral_private"])
                )

            frame = HandshakeFrame.FromString(bytes.fromhex(v["frame"]))
            init, f1 = InitiatorHandshake.start(
                config(h["initiator_id"]),
                h["responder_id"],
                session_id=bytes.fromhex(h["session_id"]),
                static_private=bytes.fromhex(i["static_private"]),
                fixed_ephemeral_for_testing_only=bytes.fromhex(i["ephemeral_private"]),
            )
            step = v["at_step"]
            if step == 1:
                _expect("step 1 at the responder", lambda: ResponderHandshake.accept(config(h["responder_id"]), frame, static_private=bytes.fromhex(r["static_private"]), fixed_ephemeral_for_testing_only=bytes.fromhex(r["ephemeral_private"])), v["expect"])
            elif step == 2:
                _expect("step 2 at the initiator", lambda: init.receive(frame), v["expect"])
            elif step == 3:
                resp, f2 = responder()
                init.receive(f2)
                _expect("step 3 at the responder", lambda: resp.receive(frame), v["expect"])
            else:
                raise CheckFailed(f"unknown at_step {step}")


@group("session_rejects")
def _session_rejects(c: Checker, g: _Group) -> None:
    for v in c.doc["session_rejects"]:
        with g.entry(v["name"]):
            r = SessionReject(version=v["version"], session_id=bytes.fromhex(v["session_id"]), message_hash=bytes.fromhex(v["message_hash"]), sender_id=v["sender_id"], recipient_id=v["recipient_id"], rejected_at_ms=v["rejected_at_ms"])
            layout = session_reject_layout(r)
            _eq("layout", layout, v["layout"])
            _eq("digest", crypto.blake3(layout), v["digest"])
            r.signature = c.keys[v["signer"]].sign(layout)
            _eq("signature", bytes(r.signature), v["signature"])
            _eq("encoded", r.SerializeToString(), v["encoded"])
            unknown = next(m for m in c.doc["message_rejections"] if m["name"] == "unknown_session")
            _eq("names the refused envelope", message_hash(SecureMessage.FromString(bytes.fromhex(unknown["envelope"]))), v["message_hash"])


@group("disclosures")
def _disclosures(c: Checker, g: _Group) -> None:
    for v in c.doc["disclosures"]:
        with g.entry(v["name"]):
            envelope = SecureMessage.FromString(bytes.fromhex(v["envelope"]))
            cert = decode_certificate(bytes.fromhex(v["certificate"]))
            disclosure = Disclosure(bytes.fromhex(v["payload"]), bytes.fromhex(v["salt"]))
            _expect("disclosure", lambda: verify_disclosure(envelope, cert, disclosure, c.trust), v["expect"])


@group("receipts")
def _receipts(c: Checker, g: _Group) -> None:
    for v in c.doc["receipts"]:
        with g.entry(v["name"]):
            r = DeliveryReceipt(version=v["version"], message_hash=bytes.fromhex(v["message_hash"]), sender_id=v["sender_id"], recipient_id=v["recipient_id"], received_at_ms=v["received_at_ms"])
            layout = receipt_layout(r)
            _eq("layout", layout, v["layout"])
            _eq("digest", crypto.blake3(layout), v["digest"])
            r.signature = c.keys[v["signer"]].sign(layout)
            _eq("signature", bytes(r.signature), v["signature"])
            _eq("encoded", r.SerializeToString(), v["encoded"])
            if not crypto.ed25519_verify(bytes(r.signature), layout, c.keys[v["signer"]].public_key):
                raise CheckFailed("receipt signature does not verify")


@group("gateway_auth")
def _gateway_auth(c: Checker, g: _Group) -> None:
    for i, v in enumerate(c.doc["gateway_auth"]):
        with g.entry(str(i)):
            layout = gateway_auth_layout(v["gateway_id"], bytes.fromhex(v["nonce"]), v["agent_id"], bytes.fromhex(v["serial"]))
            _eq("layout", layout, v["layout"])
            _eq("signature", c.keys[v["signer"]].sign(layout), v["signature"])


@group("gateway_send")
def _gateway_send(c: Checker, g: _Group) -> None:
    for i, v in enumerate(c.doc["gateway_send"]):
        with g.entry(str(i)):
            layout = gateway_send_layout(v["gateway_id"], v["timestamp_ms"], bytes.fromhex(v["nonce"]), bytes.fromhex(v["item_digest"]))
            _eq("layout", layout, v["layout"])
            _eq("signature", c.keys[v["signer"]].sign(layout), v["signature"])


@group("audit")
def _audit(c: Checker, g: _Group) -> None:
    a = c.doc["audit"]
    writer = c.keys[a["writer"]]
    leaves: list[bytes] = []
    previous = bytes(32)
    for v in a["entries"]:
        with g.entry(f"entry{v['index']}"):
            msg = audit_pb2.AuditMessage.FromString(bytes.fromhex(v["encoded"]))
            for f in ("index", "sender_id", "recipient_id", "timestamp_ms", "message_type", "outcome"):
                _eq(f, getattr(msg, f), v[f])
            for f in ("message_hash", "previous_hash", "signer_key_id", "signature"):
                _eq(f, bytes(getattr(msg, f)), v[f])
            _eq("chain link", previous, v["previous_hash"])
            _eq("signer key id", key_id(writer.public_key), v["signer_key_id"])
            layout = audit.entry_layout(msg)
            _eq("layout", layout, v["layout"])
            _eq("signature", writer.sign(layout), v["signature"])
            previous = audit.entry_hash(layout, bytes(msg.signature))
            _eq("entry hash", previous, v["entry_hash"])
            leaf = audit.leaf_hash(layout, bytes(msg.signature))
            _eq("leaf hash", leaf, v["leaf_hash"])
            leaves.append(leaf)
    with g.entry("root"):
        _eq("tree size", len(leaves), a["tree_size"])
        _eq("root", audit.merkle_root(leaves), a["root"])
    for v in a["inclusion"]:
        with g.entry(f"inclusion{v['leaf_index']}of{v['tree_size']}"):
            path = audit.inclusion_proof(leaves[: v["tree_size"]], v["leaf_index"])
            if [p.hex() for p in path] != v["path"]:
                raise CheckFailed("inclusion path differs")
            if not audit.verify_inclusion(leaves[v["leaf_index"]], v["leaf_index"], v["tree_size"], path, bytes.fromhex(v["root"])):
                raise CheckFailed("inclusion proof does not verify")
            if audit.verify_inclusion(leaves[v["leaf_index"]], v["leaf_index"], v["tree_size"], path, bytes(32)):
                raise CheckFailed("inclusion proof verifies against a wrong root")
    for v in a["consistency"]:
        with g.entry(f"consistency{v['first']}to{v['second']}"):
            path = audit.consistency_proof(leaves[: v["second"]], v["first"])
            if [p.hex() for p in path] != v["path"]:
                raise CheckFailed("consistency path differs")
            _eq("first root", audit.merkle_root(leaves[: v["first"]]), v["first_root"])
            if not audit.verify_consistency(v["first"], v["second"], path, bytes.fromhex(v["first_root"]), bytes.fromhex(v["second_root"])):
                raise CheckFailed("consistency proof does not verify")
            if audit.verify_consistency(v["first"], v["second"], path, bytes(32), bytes.fromhex(v["second_root"])):
                raise CheckFailed("consistency proof verifies against a wrong first root")
    for v in a["tree_heads"]:
        with g.entry(f"head{v['tree_size']}"):
            layout = audit.tree_head_layout(v["tree_size"], bytes.fromhex(v["root"]), v["timestamp_ms"], bytes.fromhex(v["signer_key_id"]))
            _eq("layout", layout, v["layout"])
            _eq("signature", writer.sign(layout), v["signature"])
            _eq("root", audit.merkle_root(leaves[: v["tree_size"]]), v["root"])
            head = audit.SignedTreeHead(v["tree_size"], bytes.fromhex(v["root"]), v["timestamp_ms"], bytes.fromhex(v["signer_key_id"]), bytes.fromhex(v["signature"]))
            if not head.verify(writer.public_key):
                raise CheckFailed("tree head signature does not verify")


@group("revocations")
def _revocations(c: Checker, g: _Group) -> None:
    r = c.doc["revocations"]
    registry_id = bytes.fromhex(r["registry_id"])
    previous = revocation.ZERO_HASH
    entries = []
    for v in r["entries"]:
        with g.entry(f"entry{v['version']}"):
            e = revocation.RevocationEntry(v["version"], v["kind_value"], v["agent_id"], bytes.fromhex(v["serial"]), v["reason"], v["reason_text"], v["revoked_at_ms"])
            _eq("kind", {1: "agent", 2: "serial"}[e.kind], v["kind"])
            _eq("previous", previous, v["previous_hash"])
            _eq("hash input", revocation.entry_hash_input(registry_id, previous, e), v["hash_input"])
            previous = revocation.entry_hash(registry_id, previous, e)
            _eq("entry hash", previous, v["entry_hash"])
            entries.append(e)
    h = r["head"]
    with g.entry("head"):
        layout = revocation.head_layout(registry_id, h["version"], bytes.fromhex(h["head_hash"]), h["issued_at_ms"], bytes.fromhex(h["issuer_key_id"]))
        _eq("layout", layout, h["layout"])
        _eq("signature", c.keys[r["issuer"]].sign(layout), h["signature"])
        _eq("head hash", previous, h["head_hash"])
        copy = revocation.RevocationList(c.trust, registry_id=registry_id, clock=lambda: c.now)
        copy.apply(entries, revocation.SignedHead(h["version"], bytes.fromhex(h["head_hash"]), h["issued_at_ms"], registry_id, bytes.fromhex(h["issuer_key_id"]), bytes.fromhex(h["signature"])))
        if copy.version != h["version"] or len(copy) != len(entries):
            raise CheckFailed("the verified copy does not hold every entry")
        for e in entries:
            if copy.check(e.agent_id, e.serial or bytes(16), c.now) is None:
                raise CheckFailed(f"entry {e.version} is not revoked in the copy")


@group("registry")
def _registry(c: Checker, g: _Group) -> None:
    r = c.doc["registry"]
    rid = bytes.fromhex(r["registry_id"])
    for v in r["registration"]:
        with g.entry(f"registration/{v['agent_id']}"):
            layout = registry.registration_layout(rid, bytes.fromhex(v["challenge"]), v["agent_id"], bytes.fromhex(v["identity_public_key"]))
            _eq("layout", layout, v["layout"])
            _eq("signature", c.keys[v["signer"]].sign(layout), v["signature"])
    for v in r["rotation"]:
        with g.entry(f"rotation/{v['agent_id']}"):
            args = (rid, bytes.fromhex(v["challenge"]), v["agent_id"], bytes.fromhex(v["old_public_key"]), bytes.fromhex(v["new_public_key"]))
            auth, proof = registry.rotation_layout(*args), registry.rotation_proof_layout(*args)
            _eq("authorisation layout", auth, v["authorisation_layout"])
            _eq("authorisation signature", c.keys[v["authorisation_signer"]].sign(auth), v["authorisation_signature"])
            _eq("proof layout", proof, v["proof_layout"])
            _eq("proof signature", c.keys[v["proof_signer"]].sign(proof), v["proof_signature"])
    for v in r["operator_requests"]:
        with g.entry(f"operator/{v['path']}"):
            request = bytes.fromhex(v["request"])
            _eq("request digest", crypto.blake3(request), v["request_digest"])
            layout = registry.operator_request_layout(rid, v["path"], request, v["timestamp_ms"], bytes.fromhex(v["nonce"]), bytes.fromhex(v["operator_key_id"]))
            _eq("layout", layout, v["layout"])
            metadata = dict(registry.operator_metadata(c.keys[v["signer"]], rid, v["path"], request, v["timestamp_ms"], bytes.fromhex(v["nonce"])))
            if metadata != v["metadata"]:
                raise CheckFailed(f"metadata differs: {metadata}")
            _eq("signature encoding", b64url_encode(c.keys[v["signer"]].sign(layout)), v["metadata"]["parley-operator-signature"])


def check_file(path: str | Path) -> list[GroupResult]:
    """Checks a vector file; one result per top-level group (unknown groups fail)."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if document.get("format") != "parley-conformance-vectors" or document.get("version") != 1:
        return [GroupResult("format", 0, ["not a version-1 parley-conformance-vectors file"])]
    from .memory.conformance import MemoryChecker, is_memory_document  # the shared-memory file (§18)

    if is_memory_document(document):
        return MemoryChecker(document).run()
    return Checker(document).run()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python3 -m parley.conformance docs/conformance/parley-v1.json (or parley-v1-memory.json)", file=sys.stderr)
        return 2
    results = check_file(args[0])
    passed = sum(r.passed for r in results)
    failed = sum(len(r.failures) for r in results)
    for r in results:
        if r.ok:
            print(f"ok   {r.name} ({r.passed} checks)")
        for f in r.failures:
            print(f"FAIL {f}")
    print(f"parley.conformance: {passed} checks passed, {failed} failed (BLAKE3: {crypto.BLAKE3_BACKEND})")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["Checker", "GroupResult", "check_file", "group", "main"]
