"""Checks docs/conformance/parley-v1-memory.json (docs/PROTOCOL.md §16, §18) with this SDK.

Every value is recomputed twice where it can be: with the SDK's production builders fed the file's
planned randomness (epoch keys, nonces, creation nonce), and from the raw primitives and layouts.
Sealed key copies are opened with libsodium's ``crypto_box_seal_open`` and re-sealed byte for byte
with the listed ephemeral key. A top-level key that is neither metadata nor a known group FAILS the
run. ``python3 -m parley.conformance docs/conformance/parley-v1-memory.json`` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import crypto
from .._checks import CheckFailed, GroupResult, _eq, _expect, _Group
from ..encoding import b64url_decode
from ..identity import TrustBundle, decode_certificate, key_id, verify_certificate
from ..session import LocalIdentity
from ..v1 import memory_pb2
from .layouts import (
    back_link_ad,
    epoch_layout,
    key_commitment,
    key_from_wrap_plaintext,
    key_wrap_layout,
    memory_id_of,
    memory_request_layout,
    membership_entry_hash,
    membership_layout,
    segment_ad,
    wrap_plaintext,
    write_layout,
)
from .model import Membership, verify_epoch_record, verify_key_wrap, verify_write_record
from .records import EpochKey, create_entry, new_epoch, open_wrap, open_write, seal_write
from .request_auth import parse_memory_metadata, sign_memory_request, verify_memory_request

#: Top-level keys of the memory vector file that are not check groups.
METADATA_KEYS = frozenset({"format", "version", "protocol", "section", "generated_by", "notes"})
SECTION_PREFIX = "shared memory"

h = bytes.fromhex


class MemoryChecker:
    """Runs every group of the shared-memory vector file."""

    GROUPS: dict[str, Callable[[MemoryChecker, _Group], None]] = {}

    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.memory_id: str = document["memory"]["memory_id"]
        self.keys = {name: crypto.SigningKey(h(k["ed25519_seed"])) for name, k in document["keys"].items()}
        self.certs = {name: decode_certificate(h(enc)) for name, enc in document["certificates"].items()}

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

    def entries(self) -> list[Any]:
        return [memory_pb2.MembershipEntry.FromString(h(e["encoded"])) for e in self.doc["membership"]]

    def log(self, upto: int | None = None) -> Membership:
        es = self.entries()[: upto if upto is not None else None]
        log = Membership.create(es[0], self.memory_id)
        for e in es[1:]:
            log.append(e)
        return log

    def epoch_record(self, v: dict[str, Any]) -> Any:
        return memory_pb2.EpochRecord(
            epoch=v["epoch"],
            key_commitment=h(v["key_commitment"]),
            back_link=h(v["back_link"]),
            membership_version=v["membership_version"],
            membership_hash=h(v["membership_hash"]),
            created_at_ms=v["created_at_ms"],
            creator_id=v["creator_id"],
            signature=h(v["signature"]),
        )

    def epoch(self, number: int) -> dict[str, Any]:
        return next(e for e in self.doc["epochs"] if e["epoch"] == number)


def group(name: str) -> Callable[[Callable[[MemoryChecker, _Group], None]], Callable[[MemoryChecker, _Group], None]]:
    def register(fn: Callable[[MemoryChecker, _Group], None]) -> Callable[[MemoryChecker, _Group], None]:
        MemoryChecker.GROUPS[name] = fn
        return fn

    return register


def _true(what: str, value: bool) -> None:
    if not value:
        raise CheckFailed(what)


@group("keys")
def _keys(c: MemoryChecker, g: _Group) -> None:
    for name, k in c.doc["keys"].items():
        with g.entry(name):
            sk = c.keys[name]
            _eq("ed25519 public key", sk.public_key, k["ed25519_public_key"])
            _eq("x25519 public key", crypto.ed25519_pk_to_x25519(sk.public_key), k["x25519_public_key"])
            _eq("x25519 secret key", bytes(crypto.ed25519_sk_to_x25519(sk)), k["x25519_secret_key"])


@group("issuer")
def _issuer(c: MemoryChecker, g: _Group) -> None:
    v = c.doc["issuer"]
    with g.entry("issuer"):
        sk = crypto.SigningKey(h(v["ed25519_seed"]))
        _eq("issuer public key", sk.public_key, v["ed25519_public_key"])
        _eq("issuer key id", key_id(sk.public_key), v["key_id"])


@group("trust_bundle")
def _trust_bundle(c: MemoryChecker, g: _Group) -> None:
    with g.entry("bundle"):
        bundle = TrustBundle.from_json(c.doc["trust_bundle"])
        issuer = bundle.get(h(c.doc["issuer"]["key_id"]))
        _true("the bundle holds the issuer", issuer is not None and issuer.public_key.hex() == c.doc["issuer"]["ed25519_public_key"])


@group("certificates")
def _certificates(c: MemoryChecker, g: _Group) -> None:
    bundle = TrustBundle.from_json(c.doc["trust_bundle"])
    at = c.doc["membership"][0]["timestamp_ms"]
    for name in c.doc["certificates"]:
        with g.entry(name):
            cert = verify_certificate(c.certs[name], bundle, at, expected_agent_id=name)
            _eq("identity key", cert.identity_public_key, c.doc["keys"][name]["ed25519_public_key"])


@group("memory")
def _memory(c: MemoryChecker, g: _Group) -> None:
    m = c.doc["memory"]
    with g.entry("memory_id"):
        _eq("memory id", memory_id_of(m["owner_id"], h(m["owner_public_key"]), h(m["creation_nonce"])), m["memory_id"])
    with g.entry("create entry (production builder)"):
        v = c.doc["membership"][0]
        memory_id, entry = create_entry(m["owner_id"], c.keys[m["owner_id"]], now_ms=v["timestamp_ms"], expires_at_ms=v["expires_at_ms"], creation_nonce=h(m["creation_nonce"]))
        _eq("memory id", memory_id, m["memory_id"])
        _eq("encoded CREATE entry", entry.SerializeToString(), v["encoded"])


@group("membership")
def _membership(c: MemoryChecker, g: _Group) -> None:
    es = c.entries()
    log: Membership | None = None
    for i, (e, v) in enumerate(zip(es, c.doc["membership"])):
        with g.entry(f"entry-{v['version']}"):
            _eq("version", e.version, v["version"])
            _eq("change", e.change, v["change"])
            _eq("access", e.access, v["access"])
            _eq("member", e.member_id, v["member_id"])
            _eq("signer", e.signer_id, v["signer_id"])
            _eq("member key", bytes(e.member_public_key), v["member_public_key"])
            _eq("previous hash", bytes(e.previous_hash), v["previous_hash"])
            layout = membership_layout(c.memory_id, e)
            _eq("layout", layout, v["layout"])
            _eq("signature", c.keys[v["signer_id"]].sign(layout), v["signature"])
            _true("signature verifies", crypto.ed25519_verify(bytes(e.signature), layout, c.keys[v["signer_id"]].public_key))
            _eq("entry hash", membership_entry_hash(c.memory_id, e), v["entry_hash"])
            _eq("encoding", e.SerializeToString(), v["encoded"])
            if i == 0:
                log = Membership.create(e, c.memory_id)
            else:
                _eq("chain", v["previous_hash"], c.doc["membership"][i - 1]["entry_hash"])
                assert log is not None
                log.append(e)
    with g.entry("folded member list"):
        assert log is not None
        active = [m.member_id for m in log.active(c.doc["membership"][-1]["timestamp_ms"])]
        _true(f"active members after the log are planner-1 and worker-2, not {active}", active == ["planner-1", "worker-2"])


@group("epochs")
def _epochs(c: MemoryChecker, g: _Group) -> None:
    log = c.log()
    previous_record: Any | None = None
    previous_key: EpochKey | None = None
    for v in c.doc["epochs"]:
        with g.entry(f"epoch-{v['epoch']}"):
            r = c.epoch_record(v)
            _eq("key commitment", key_commitment(c.memory_id, v["epoch"], h(v["key"])), v["key_commitment"])
            layout = epoch_layout(c.memory_id, r)
            _eq("layout", layout, v["layout"])
            _eq("signature", c.keys[v["creator_id"]].sign(layout), v["signature"])
            verify_epoch_record(log, r, previous_record)
            built = new_epoch(
                v["creator_id"], c.keys[v["creator_id"]], c.memory_id, v["membership_version"], h(v["membership_hash"]), previous_key, v["created_at_ms"],
                key=h(v["key"]), nonce=h(v["back_link_nonce"]) if v["epoch"] > 1 else None,
            )  # fmt: skip
            _eq("epoch record (production builder)", built.record.SerializeToString(), r.SerializeToString().hex())
            if v["epoch"] > 1:
                _eq("back link AD", back_link_ad(c.memory_id, v["epoch"]), v["back_link_ad"])
                _eq("back link nonce", h(v["back_link"])[:24], v["back_link_nonce"])
                _eq("back link opens to the previous key", crypto.xaead_open(h(v["key"]), h(v["back_link"]), h(v["back_link_ad"])), c.epoch(v["epoch"] - 1)["key"])
            previous_record, previous_key = r, built


@group("key_wraps")
def _key_wraps(c: MemoryChecker, g: _Group) -> None:
    log = c.log()
    for w in c.doc["key_wraps"]:
        with g.entry(w["name"]):
            epoch = c.epoch(w["epoch"])
            sealed = h(w["sealed_key"])
            plaintext = crypto.sealed_box_open(sealed, c.keys[w["member_id"]])
            _eq("plaintext", bytes(plaintext), w["plaintext"])
            _eq("wrap plaintext layout", bytes(wrap_plaintext(c.memory_id, w["epoch"], w["member_id"], h(epoch["key"]))), w["plaintext"])
            _eq("key", bytes(key_from_wrap_plaintext(plaintext, c.memory_id, w["epoch"], w["member_id"])), epoch["key"])
            for other in c.keys:
                if other != w["member_id"]:
                    _expect(f"{other} opens {w['name']}", lambda o=other: crypto.sealed_box_open(sealed, c.keys[o]), "decrypt_failed")  # type: ignore[misc]
            _eq("ephemeral key", sealed[:32], w["ephemeral_x25519_public"])
            _eq("member x25519 key", crypto.ed25519_pk_to_x25519(h(w["member_public_key"])), w["member_x25519_public_key"])
            _eq("re-sealed", crypto.sealed_box_seal_with_ephemeral_for_testing_only(h(w["plaintext"]), h(w["member_public_key"]), h(w["ephemeral_x25519_secret"])), w["sealed_key"])
            wrap = memory_pb2.KeyWrap(epoch=w["epoch"], member_id=w["member_id"], member_public_key=h(w["member_public_key"]), sealed_key=sealed, signer_id=w["signer_id"], signature=h(w["signature"]))
            layout = key_wrap_layout(c.memory_id, wrap)
            _eq("layout", layout, w["layout"])
            _eq("signature", c.keys[w["signer_id"]].sign(layout), w["signature"])
            verify_key_wrap(log, wrap)
            opened = open_wrap(w["member_id"], c.keys[w["member_id"]], c.memory_id, wrap, c.epoch_record(epoch))
            _eq("opened key (production code)", bytes(opened.key), epoch["key"])
    with g.entry("the revoked member holds epoch 1 only"):
        got = [w["epoch"] for w in c.doc["key_wraps"] if w["member_id"] == "worker-3"]
        _true(f"worker-3 has copies of epochs {got}", got == [1])


@group("writes")
def _writes(c: MemoryChecker, g: _Group) -> None:
    log = c.log()
    for w in c.doc["writes"]:
        with g.entry(w["name"]):
            epoch = c.epoch(w["key_epoch"])
            key = EpochKey(c.epoch_record(epoch), bytearray(h(epoch["key"])))
            _eq("AD", segment_ad(c.memory_id, w["segment_id"], w["version"], w["key_epoch"], w["writer_id"]), w["ad"])
            record, ciphertext = seal_write(
                w["writer_id"], c.keys[w["writer_id"]], c.memory_id, key,
                segment_id=w["segment_id"], previous_version=w["previous_version"], data=h(w["plaintext"]),
                expires_at_ms=w["expires_at_ms"], now_ms=w["timestamp_ms"], nonce=h(w["nonce"]),
            )  # fmt: skip
            _eq("ciphertext", ciphertext, w["ciphertext"])
            _eq("ciphertext (raw primitive)", crypto.xaead_seal(h(epoch["key"]), h(w["plaintext"]), h(w["ad"]), nonce=h(w["nonce"])), w["ciphertext"])
            _eq("digest", crypto.blake3(ciphertext), w["ciphertext_digest"])
            _eq("ciphertext bytes", record.ciphertext_bytes, w["ciphertext_bytes"])
            layout = write_layout(c.memory_id, record)
            _eq("layout", layout, w["layout"])
            _eq("signature", bytes(record.signature), w["signature"])
            verify_write_record(log, record)
            _eq("plaintext", open_write(c.memory_id, key, record, h(w["ciphertext"])), w["plaintext"])
            _eq("plaintext (raw primitive)", crypto.xaead_open(h(epoch["key"]), h(w["ciphertext"]), h(w["ad"])), w["plaintext"])


@group("request")
def _request(c: MemoryChecker, g: _Group) -> None:
    r = c.doc["request"]
    body = h(r["request"])
    with g.entry("layout"):
        _eq("digest", crypto.blake3(body), r["request_digest"])
        layout = memory_request_layout(r["service_id"], r["path"], body, r["timestamp_ms"], h(r["nonce"]), r["agent_id"], h(r["serial"]))
        _eq("layout", layout, r["layout"])
        _eq("signature", c.keys[r["agent_id"]].sign(layout), r["signature"])
    with g.entry("request bytes"):
        req = memory_pb2.ReadSegmentRequest.FromString(body)
        _eq("request encoding", memory_pb2.ReadSegmentRequest(memory_id=req.memory_id, segment_id=req.segment_id).SerializeToString(), r["request"])
    with g.entry("metadata"):
        identity = LocalIdentity(r["agent_id"], c.keys[r["agent_id"]], c.certs[r["agent_id"]])
        metadata = dict(sign_memory_request(identity, r["service_id"], r["path"], body, r["timestamp_ms"], nonce=h(r["nonce"])))
        if metadata != r["metadata"]:
            raise CheckFailed(f"metadata differs: {metadata}")
        auth = parse_memory_metadata(r["metadata"])
        _eq("parsed signature", auth.signature, r["signature"])
        _eq("parsed certificate serial", bytes(auth.certificate.serial), r["serial"])
        _eq("signature encoding", b64url_decode(r["metadata"]["parley-memory-signature"]), r["signature"])
        pk = c.keys[r["agent_id"]].public_key
        _true("request signature verifies", verify_memory_request(auth, r["service_id"], r["path"], body, r["agent_id"], pk, h(r["serial"])))
        _true("another store's name does not verify", not verify_memory_request(auth, "another-store", r["path"], body, r["agent_id"], pk, h(r["serial"])))


@group("rejections")
def _rejections(c: MemoryChecker, g: _Group) -> None:
    for r in c.doc["rejections"]:
        with g.entry(r["name"]):
            known = {"create": 1, "grant_worker": 2}
            for name in r["log"]:
                if name not in known:
                    raise CheckFailed(f"unknown log entry name {name!r}")
            log = c.log(max(known[n] for n in r["log"]))
            entry = memory_pb2.MembershipEntry.FromString(h(r["entry"]))
            _expect(r["name"], lambda: log.append(entry), r["expect"])


def is_memory_document(document: dict[str, Any]) -> bool:
    return str(document.get("section", "")).startswith(SECTION_PREFIX)


__all__ = ["METADATA_KEYS", "MemoryChecker", "is_memory_document"]
