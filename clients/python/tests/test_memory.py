"""Shared memory (docs/PROTOCOL.md §18) without a store: the committed conformance vectors, the
membership-log rules in their order, key epochs, key copies, writes, and the client's verification
of what a store answers (a store is not trusted for integrity: whatever it forges or rolls back
must be refused). The store itself is exercised in test_e2e_memory.py and in the TypeScript
interop test (apps/gateway/test/load/python-agent.spec.ts)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from parley import SharedMemoryError, crypto
from parley.conformance import check_file, main
from parley.errors import ERROR_CODES
from parley.memory.client import MemoryClient, _State
from parley.memory.conformance import METADATA_KEYS, MemoryChecker
from parley.memory.layouts import membership_entry_hash, membership_layout, write_layout
from parley.memory.model import Membership, verify_current_epoch, verify_epoch_record, verify_key_wrap, verify_write_record
from parley.memory.names import ACCESS_ADMIN, ACCESS_READ, ACCESS_WRITE, CHANGE_GRANT, CHANGE_REVOKE
from parley.memory.records import EpochKey, change_entry, create_entry, follow_back_link, new_epoch, open_wrap, open_write, seal_write, wrap_key
from parley.session import LocalIdentity
from parley.v1 import memory_pb2

from ._paths import REPO_ROOT
from .helpers import NOW, World

MEMORY_FILE = REPO_ROOT / "docs" / "conformance" / "parley-v1-memory.json"
DOC = json.loads(MEMORY_FILE.read_text())
GROUPS = [k for k in DOC if k not in METADATA_KEYS]


def code(fn: Callable[[], object]) -> str:
    try:
        fn()
    except SharedMemoryError as error:
        return error.code
    return "ok"


# --- the vector file --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return {r.name: r for r in check_file(MEMORY_FILE)}


def test_every_group_of_the_memory_file_is_known_to_the_checker() -> None:
    assert [g for g in GROUPS if g not in MemoryChecker.GROUPS] == []
    assert set(GROUPS) == set(MemoryChecker.GROUPS)


@pytest.mark.parametrize("name", GROUPS)
def test_memory_group(name: str, results: dict[str, Any]) -> None:
    assert results[name].failures == []
    assert results[name].passed > 0


def test_an_unknown_group_fails_the_memory_run() -> None:
    doc = copy.deepcopy(DOC)
    doc["future_group"] = {}
    results = {r.name: r for r in MemoryChecker(doc).run()}
    assert results["future_group"].failures


@pytest.mark.parametrize(
    "path",
    [
        ("memory", "memory_id"),
        ("membership", 2, "entry_hash"),
        ("membership", 3, "layout"),
        ("epochs", 1, "back_link"),
        ("epochs", 0, "key_commitment"),
        ("key_wraps", 3, "sealed_key"),
        ("key_wraps", 1, "signature"),
        ("writes", 1, "ciphertext"),
        ("writes", 0, "layout"),
        ("request", "layout"),
        ("keys", "worker-2", "x25519_secret_key"),
    ],
)
def test_a_changed_memory_value_is_caught(path: tuple[Any, ...]) -> None:
    doc = copy.deepcopy(DOC)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    value = node[path[-1]]
    node[path[-1]] = ("1" if value[4] != "1" else "2").join((value[:4], value[5:]))
    results = {r.name: r for r in MemoryChecker(doc).run()}
    assert results[str(path[0])].failures, f"changing {path} went unnoticed"


def test_a_changed_rejection_expectation_is_caught() -> None:
    doc = copy.deepcopy(DOC)
    doc["rejections"][0]["expect"] = "ok"
    doc["rejections"][4]["expect"] = "bad_signature"
    results = {r.name: r for r in MemoryChecker(doc).run()}
    assert len(results["rejections"].failures) == 2


def test_the_command_line_checks_the_memory_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(MEMORY_FILE)]) == 0
    out = capsys.readouterr().out
    assert "rejections" in out and "0 failed" in out and "FAIL" not in out


def test_the_error_codes_are_the_typescript_sdks() -> None:
    """Stable codes: every code of packages/rpc's table (which the TS MemoryError carries) exists here."""
    table = (REPO_ROOT / "packages" / "rpc" / "src" / "errors.ts").read_text()
    body = table.split("GRPC_STATUS_BY_CODE = Object.freeze({", 1)[1].split("} as const)", 1)[0]
    ts_codes = set(re.findall(r"^\s+([a-z_]+): GrpcStatus\.", body, re.M))
    assert {"conflict", "quota_exceeded", "rotation_required"} <= ts_codes
    assert ts_codes - ERROR_CODES == set()


# --- a memory built here -------------------------------------------------------------------------------


class Memory:
    """A memory's records built in process by real identities: owner, writer, reader."""

    def __init__(self) -> None:
        self.world = World()
        self.owner = self.world.identity("owner-1")
        self.writer = self.world.identity("writer-2")
        self.reader = self.world.identity("reader-3")
        self.outsider = self.world.identity("outsider-4")
        self.memory_id, create = create_entry(self.owner.agent_id, self.owner.signing_key, now_ms=NOW)
        self.log = Membership.create(create, self.memory_id)
        self.epoch1 = new_epoch(self.owner.agent_id, self.owner.signing_key, self.memory_id, 1, self.log.head, None, NOW)
        self.grant(self.writer, ACCESS_WRITE)
        self.grant(self.reader, ACCESS_READ)

    def entry(self, signer: LocalIdentity, change: int, member: LocalIdentity, access: int = 0, expires_at_ms: int = 0, at: int = NOW + 1) -> Any:
        return change_entry(signer.agent_id, signer.signing_key, self.log, change=change, member_id=member.agent_id, public_key=member.signing_key.public_key, access=access, expires_at_ms=expires_at_ms, now_ms=at)

    def grant(self, member: LocalIdentity, access: int, signer: LocalIdentity | None = None) -> None:
        self.log.append(self.entry(signer or self.owner, CHANGE_GRANT, member, access))

    def wrap(self, epoch: EpochKey, member: LocalIdentity, signer: LocalIdentity | None = None) -> Any:
        s = signer or self.owner
        return wrap_key(s.agent_id, s.signing_key, self.memory_id, epoch, member.agent_id, member.signing_key.public_key)

    def write(self, writer: LocalIdentity, epoch: EpochKey, data: bytes = b"plan v1", previous: int = 0) -> tuple[Any, bytes]:
        return seal_write(writer.agent_id, writer.signing_key, self.memory_id, epoch, segment_id="plan", previous_version=previous, data=data, expires_at_ms=0, now_ms=NOW + 5)


def test_the_membership_rules_in_order() -> None:
    m = Memory()
    # rule 4: a writer is not an admin; nobody grants or revokes the owner
    assert code(lambda: m.log.append(m.entry(m.writer, CHANGE_GRANT, m.outsider, ACCESS_READ))) == "permission_denied"
    assert code(lambda: m.log.append(m.entry(m.owner, CHANGE_REVOKE, m.owner))) == "permission_denied"
    # rule 5: admin only by the owner; an expiry before the entry is malformed
    m.grant(m.outsider, ACCESS_ADMIN)
    assert code(lambda: m.log.append(m.entry(m.outsider, CHANGE_GRANT, m.reader, ACCESS_ADMIN))) == "permission_denied"
    assert code(lambda: m.log.append(m.entry(m.owner, CHANGE_GRANT, m.reader, ACCESS_READ, expires_at_ms=NOW))) == "malformed"
    # rule 6: revoking an admin only by the owner; a revocation names the key on record
    assert code(lambda: m.log.append(m.entry(m.outsider, CHANGE_REVOKE, m.outsider))) == "permission_denied"
    wrong_key = m.entry(m.owner, CHANGE_REVOKE, m.reader)
    wrong_key.member_public_key = m.writer.signing_key.public_key
    wrong_key.signature = m.owner.signing_key.sign(membership_layout(m.memory_id, wrong_key))
    assert code(lambda: m.log.append(wrong_key)) == "malformed"
    # rule 7: the signature, last
    forged = m.entry(m.owner, CHANGE_GRANT, m.reader, ACCESS_WRITE)
    forged.signature = m.outsider.signing_key.sign(b"something else")
    assert code(lambda: m.log.append(forged)) == "bad_signature"
    # rule 2: chain
    stale = m.entry(m.owner, CHANGE_GRANT, m.reader, ACCESS_WRITE)
    m.log.append(m.entry(m.owner, CHANGE_REVOKE, m.outsider))
    assert code(lambda: m.log.append(stale)) == "conflict"
    # a refused entry changes nothing
    head = m.log.head
    assert code(lambda: m.log.append(forged)) != "ok" and m.log.head == head
    assert [x.member_id for x in m.log.active(NOW + 10)] == ["owner-1", "reader-3", "writer-2"]


def test_an_admin_whose_grant_expired_cannot_sign() -> None:
    m = Memory()
    m.log.append(m.entry(m.owner, CHANGE_GRANT, m.outsider, ACCESS_ADMIN, expires_at_ms=NOW + 100))
    late = m.entry(m.outsider, CHANGE_GRANT, m.reader, ACCESS_WRITE, at=NOW + 100)  # expiry is exclusive
    assert code(lambda: m.log.append(late)) == "permission_denied"
    assert [x.member_id for x in m.log.active(NOW + 100)] == ["owner-1", "reader-3", "writer-2"]


def test_a_create_entry_commits_to_the_owner_key() -> None:
    m = Memory()
    create = m.log.entries[0]
    assert code(lambda: Membership.create(create, "mem-" + "0" * 32)) == "identity_mismatch"
    other = copy.deepcopy(create)
    other.member_public_key = m.outsider.signing_key.public_key
    assert code(lambda: Membership.create(other)) == "bad_signature"  # derives another id, whose owner key did not sign


def test_epochs_back_links_and_key_copies() -> None:
    m = Memory()
    verify_epoch_record(m.log, m.epoch1.record, None)
    # the revocation's epoch: made by the owner for the REVOKE entry's version
    revoke = m.entry(m.owner, CHANGE_REVOKE, m.reader)
    m.log.append(revoke)
    epoch2 = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, revoke.version, membership_entry_hash(m.memory_id, revoke), m.epoch1, NOW + 2)
    verify_epoch_record(m.log, epoch2.record, m.epoch1.record)
    assert code(lambda: verify_epoch_record(m.log, epoch2.record, None)) == "ok"
    skipped = copy.deepcopy(epoch2.record)
    skipped.epoch = 3
    assert code(lambda: verify_epoch_record(m.log, skipped, m.epoch1.record)) == "conflict"
    by_reader = new_epoch(m.reader.agent_id, m.reader.signing_key, m.memory_id, revoke.version, membership_entry_hash(m.memory_id, revoke), m.epoch1, NOW + 2)
    assert code(lambda: verify_epoch_record(m.log, by_reader.record, m.epoch1.record)) == "permission_denied"
    # the writer opens its copy of epoch 2 and follows the back link to epoch 1
    wrap = m.wrap(epoch2, m.writer)
    verify_key_wrap(m.log, wrap)
    key2 = open_wrap(m.writer.agent_id, m.writer.signing_key, m.memory_id, wrap, epoch2.record)
    assert bytes(key2.key) == bytes(epoch2.key)
    key1 = follow_back_link(m.memory_id, key2, m.epoch1.record)
    assert bytes(key1.key) == bytes(m.epoch1.key)
    # nobody else opens it; a copy is bound to its member, epoch and commitment
    assert code(lambda: open_wrap(m.writer.agent_id, m.reader.signing_key, m.memory_id, wrap, epoch2.record)) == "decrypt_failed"
    assert code(lambda: open_wrap(m.writer.agent_id, m.writer.signing_key, m.memory_id, wrap, m.epoch1.record)) == "decrypt_failed"
    moved = m.wrap(m.epoch1, m.writer)
    moved.epoch = 2
    assert code(lambda: open_wrap(m.writer.agent_id, m.writer.signing_key, m.memory_id, moved, epoch2.record)) == "decrypt_failed"
    substituted = EpochKey(epoch2.record, bytearray(crypto.random_bytes(32)))
    assert code(lambda: open_wrap(m.writer.agent_id, m.writer.signing_key, m.memory_id, m.wrap(substituted, m.writer), epoch2.record)) == "decrypt_failed"
    # a copy signed by a reader, or sealed to a key its member never held, is refused
    assert code(lambda: verify_key_wrap(m.log, m.wrap(epoch2, m.writer, signer=m.reader))) == "bad_signature"
    stray = m.wrap(epoch2, m.writer)
    stray.member_public_key = m.outsider.signing_key.public_key
    assert code(lambda: verify_key_wrap(m.log, stray)) == "permission_denied"
    # a back link that seals another key than epoch 1's committed one is refused (§18.5)
    wrong_previous = EpochKey(m.epoch1.record, bytearray(crypto.random_bytes(32)))
    lying = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, revoke.version, membership_entry_hash(m.memory_id, revoke), wrong_previous, NOW + 2)
    assert code(lambda: follow_back_link(m.memory_id, lying, m.epoch1.record)) == "decrypt_failed"
    tampered = EpochKey(copy.deepcopy(epoch2.record), epoch2.key)
    tampered.record.back_link = bytes(72)
    assert code(lambda: follow_back_link(m.memory_id, tampered, m.epoch1.record)) == "decrypt_failed"
    # epoch 1 does not open epoch 2
    assert code(lambda: follow_back_link(m.memory_id, key1, epoch2.record)) == "internal"
    # wiping zeroes the buffer
    key2.wipe()
    assert not any(key2.key)


def test_writes_are_signed_bound_and_verified() -> None:
    m = Memory()
    record, ciphertext = m.write(m.writer, m.epoch1, b"the plan")
    verify_write_record(m.log, record)
    assert open_write(m.memory_id, m.epoch1, record, ciphertext) == b"the plan"
    assert len(ciphertext) == len(b"the plan") + 40 and record.version == 1
    # a reader cannot sign a write that verifies
    by_reader, ct = m.write(m.reader, m.epoch1)
    assert code(lambda: verify_write_record(m.log, by_reader)) == "bad_signature"
    # the ciphertext is the one signed: a flipped bit or a swapped ciphertext is bad_signature
    flipped = bytearray(ciphertext)
    flipped[30] ^= 1
    assert code(lambda: open_write(m.memory_id, m.epoch1, record, bytes(flipped))) == "bad_signature"
    assert code(lambda: open_write(m.memory_id, m.epoch1, record, ct)) == "bad_signature"
    # the AD binds segment, version, epoch and writer: a record moved to another segment does not open
    moved = copy.deepcopy(record)
    moved.segment_id = "other"
    moved.signature = m.writer.signing_key.sign(write_layout(m.memory_id, moved))
    verify_write_record(m.log, moved)
    assert code(lambda: open_write(m.memory_id, m.epoch1, moved, ciphertext)) == "decrypt_failed"
    # any change to a signed field breaks the signature
    for field, value in (("version", 2), ("previous_version", 1), ("timestamp_ms", NOW), ("writer_id", "owner-1")):
        changed = copy.deepcopy(record)
        setattr(changed, field, value)
        assert code(lambda: verify_write_record(m.log, changed)) in ("bad_signature", "malformed"), field
    assert code(lambda: m.write(m.writer, m.epoch1, b"x" * (1024 * 1024 + 1))) == "too_large"


def test_a_removed_writer_s_earlier_writes_still_verify() -> None:
    m = Memory()
    record, _ = m.write(m.writer, m.epoch1)
    m.log.append(m.entry(m.owner, CHANGE_REVOKE, m.writer))
    verify_write_record(m.log, record)


def test_the_log_answers_every_earlier_version_from_each_members_history() -> None:
    # Folded in linear work (no member-list copy per entry): member_at must still answer as of any version.
    m = Memory()
    others = [m.world.identity(f"worker-{i}") for i in range(5, 9)]
    for n in range(24):
        who = others[n % len(others)]
        if n % 5 == 4 and m.log.member(who.agent_id) is not None:
            m.log.append(m.entry(m.owner, CHANGE_REVOKE, who))
        else:
            m.grant(who, ACCESS_READ if n % 2 else ACCESS_WRITE)
    entries = m.log.entries
    for version in range(1, m.log.version + 1):
        for who in [m.owner, m.writer, m.reader, *others]:
            last = next((e for e in reversed(entries[:version]) if e.member_id == who.agent_id), None)
            expected = None if last is None or last.change == CHANGE_REVOKE else (ACCESS_ADMIN if last.version == 1 else last.access)
            got = m.log.member_at(who.agent_id, version)
            assert (got.access if got is not None else None) == expected, (who.agent_id, version)
    assert m.log.member_at(m.owner.agent_id, 0) is None and m.log.member_at(m.owner.agent_id, m.log.version + 1) is None
    assert m.log.last_revoke_version == max(e.version for e in entries if e.change == CHANGE_REVOKE)
    assert sorted(x.member_id for x in m.log.members()) == sorted({e.member_id for e in entries} - {e.member_id for e in entries if m.log.member(e.member_id) is None})


def test_an_epoch_made_by_a_creator_whose_grant_had_expired_is_refused() -> None:
    m = Memory()
    m.log.append(m.entry(m.owner, CHANGE_GRANT, m.outsider, ACCESS_WRITE, expires_at_ms=NOW + 1000))
    in_time = new_epoch(m.outsider.agent_id, m.outsider.signing_key, m.memory_id, m.log.version, m.log.head, m.epoch1, NOW + 999)
    verify_epoch_record(m.log, in_time.record, m.epoch1.record)
    late = new_epoch(m.outsider.agent_id, m.outsider.signing_key, m.memory_id, m.log.version, m.log.head, m.epoch1, NOW + 1000)  # expiry is exclusive
    assert code(lambda: verify_epoch_record(m.log, late.record, m.epoch1.record)) == "permission_denied"


def test_the_current_epoch_is_made_for_the_last_revocation_or_later_and_never_goes_back() -> None:
    m = Memory()  # versions: 1 CREATE, 2 writer, 3 reader
    m.grant(m.outsider, ACCESS_WRITE)  # 4
    e2 = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, 4, m.log.head, m.epoch1, NOW + 2)
    # the writer, still a member at version 2, makes an epoch it keeps for itself; then it is revoked
    by_writer = new_epoch(m.writer.agent_id, m.writer.signing_key, m.memory_id, 2, m.log.hash_at(2) or b"", m.epoch1, NOW + 3)
    m.log.append(m.entry(m.owner, CHANGE_REVOKE, m.writer, at=NOW + 4))  # 5
    assert m.log.last_revoke_version == 5
    e3 = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, 5, m.log.head, e2, NOW + 4)
    verify_epoch_record(m.log, by_writer.record, m.epoch1.record)  # a valid record of its time…
    assert code(lambda: verify_current_epoch(m.log, by_writer.record)) == "conflict"  # …but not one to write under
    verify_current_epoch(m.log, e3.record, [m.epoch1.record, e2.record, e3.record])
    e4 = new_epoch(m.outsider.agent_id, m.outsider.signing_key, m.memory_id, 5, m.log.head, e3, NOW + 5)
    verify_current_epoch(m.log, e4.record, [e3.record])
    # after the revocation, but older than an epoch already accepted: a store going back
    m.grant(m.world.identity("worker-5"), ACCESS_READ)  # 6
    later = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, 6, m.log.head, e3, NOW + 6)
    assert code(lambda: verify_current_epoch(m.log, e4.record, [later.record])) == "conflict"


def test_a_key_copy_signed_by_a_member_no_longer_on_record_is_refused() -> None:
    m = Memory()
    by_writer = m.wrap(m.epoch1, m.reader, signer=m.writer)
    verify_key_wrap(m.log, by_writer)
    m.log.append(m.entry(m.owner, CHANGE_REVOKE, m.writer))
    # under a key it once held with write access, but it is no writer now
    assert code(lambda: verify_key_wrap(m.log, by_writer)) == "bad_signature"


# --- the client's verification of a store's answers ---------------------------------------------


def answer(
    m: Memory,
    *,
    for_member: LocalIdentity,
    after: int = 0,
    wrap_epoch: EpochKey | None = None,
    epochs: list[EpochKey] | None = None,
    wrap_signer: LocalIdentity | None = None,
) -> Any:
    """GetMemory's answer for ``m``: the log after ``after``, ``epochs`` (epoch 1 by default; the last one
    current), and ``for_member``'s copy of ``wrap_epoch`` (the current epoch) signed by ``wrap_signer`` (the owner)."""
    epochs = [m.epoch1] if epochs is None else epochs
    res = memory_pb2.GetMemoryResponse()
    res.memory.memory_id = m.memory_id
    res.memory.owner_id = m.owner.agent_id
    res.memory.membership_version = m.log.version
    res.memory.current_epoch = epochs[-1].record.epoch
    res.entries.extend(m.log.entries[after:])
    for who in (m.owner, m.writer, m.reader):
        res.members.add(member_id=who.agent_id, access=ACCESS_ADMIN, member_public_key=who.signing_key.public_key, certificate=who.certificate)
    res.epochs.extend(e.record for e in epochs)
    res.wrap.CopyFrom(m.wrap(wrap_epoch or epochs[-1], for_member, signer=wrap_signer))
    return res


def client_for(m: Memory, me: LocalIdentity) -> MemoryClient:
    return MemoryClient(identity=me, address="127.0.0.1:1", service_id="gw-test", trust_bundle=m.world.trust, clock=lambda: NOW + 10)


def test_the_client_accepts_a_true_answer_and_opens_its_key() -> None:
    m = Memory()
    c = client_for(m, m.writer)
    state = c._verify_state(m.memory_id, None, answer(m, for_member=m.writer))
    assert bytes(state.keys[1].key) == bytes(m.epoch1.key)
    assert c._info(state).access == "write"
    assert [x.agent_id for x in c._info(state).members] == ["owner-1", "reader-3", "writer-2"]


@pytest.mark.parametrize(
    "tamper, expect",
    [
        (lambda m, res: res.entries.pop(), "bad_signature"),  # the log does not reach the reported version
        (lambda m, res: res.ClearField("members"), "bad_signature"),  # no owner's certificate
        (lambda m, res: res.members[0].certificate.CopyFrom(m.outsider.certificate), "identity_mismatch"),
        (lambda m, res: setattr(res.entries[1], "access", ACCESS_ADMIN), "bad_signature"),  # a grant the owner did not sign
        (lambda m, res: setattr(res.memory, "memory_id", "mem-" + "1" * 32), "bad_signature"),
        (lambda m, res: setattr(res.memory, "current_epoch", 2), "bad_signature"),
        (lambda m, res: setattr(res.wrap, "member_id", "reader-3"), "bad_signature"),
        (lambda m, res: setattr(res.epochs[0], "created_at_ms", NOW + 1), "bad_signature"),
    ],
)
def test_the_client_refuses_a_store_that_forges(tamper: Callable[[Memory, Any], object], expect: str) -> None:
    m = Memory()
    c = client_for(m, m.writer)
    res = answer(m, for_member=m.writer)
    tamper(m, res)
    assert code(lambda: c._verify_state(m.memory_id, None, res)) == expect


def test_a_substituted_key_copy_is_its_signer_s_fault_not_a_refusal() -> None:
    # §18.5: the answer verified, so it is adopted; the copy's signer is remembered and no key of the epoch is held
    # (test_memory_cut.py has the whole attack and its repair). A copy that opens to another key than the epoch
    # commits to is not provably the signer's (the store may pair a genuine copy with another record of the epoch).
    m = Memory()
    c = client_for(m, m.writer)
    other = EpochKey(m.epoch1.record, bytearray(crypto.random_bytes(32)))
    state = c._verify_state(m.memory_id, None, answer(m, for_member=m.writer, wrap_epoch=other))
    assert state.keys == {} and state.log.version == 3 and state.current_epoch == 1
    assert (state.faults[1].member_id, state.faults[1].kind, state.faults[1].proven) == ("owner-1", "key_copy", False)


def test_the_client_refuses_a_rolled_back_log() -> None:
    m = Memory()
    c = client_for(m, m.writer)
    seen = c._verify_state(m.memory_id, None, answer(m, for_member=m.writer))
    older = answer(m, for_member=m.writer, after=m.log.version)
    older.memory.membership_version = m.log.version - 1
    assert code(lambda: c._verify_state(m.memory_id, seen, older)) == "replay"
    # and it continues a log it holds with only the new entries
    m.log.append(m.entry(m.owner, CHANGE_GRANT, m.outsider, ACCESS_READ))
    newer = answer(m, for_member=m.writer, after=seen.log.version)
    state = c._verify_state(m.memory_id, seen, newer)
    assert state.log.version == 4 and isinstance(state, _State)


def test_the_client_derives_older_keys_through_back_links_only() -> None:
    m = Memory()
    c = client_for(m, m.writer)
    revoke = m.entry(m.owner, CHANGE_REVOKE, m.reader)
    m.log.append(revoke)
    epoch2 = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, revoke.version, membership_entry_hash(m.memory_id, revoke), m.epoch1, NOW + 2)
    res = answer(m, for_member=m.writer, wrap_epoch=epoch2)
    res.memory.current_epoch = 2
    res.epochs.append(epoch2.record)
    state = c._verify_state(m.memory_id, None, res)
    assert set(state.keys) == {2, 1}  # epoch 2's back link was checked on the way (§18.5), so key 1 is held too
    state.keys.pop(1)
    assert bytes(c._key_for(state, 1).key) == bytes(m.epoch1.key)
    record, ciphertext = m.write(m.writer, m.epoch1)
    state.keys.pop(1)
    c._states[m.memory_id] = state
    assert c.open(m.memory_id, record, ciphertext).data == b"plan v1"
    # the revoked reader, holding epoch 1 only, opens nothing of epoch 2
    r = client_for(m, m.reader)
    before = copy.deepcopy(answer(m, for_member=m.reader))
    before.ClearField("entries")
    before.entries.extend(m.log.entries[:3])
    before.memory.membership_version = 3
    r._states[m.memory_id] = r._verify_state(m.memory_id, None, before)
    later, later_ct = m.write(m.owner, epoch2, b"after the revocation")
    assert code(lambda: r.open(m.memory_id, later, later_ct)) == "permission_denied"  # no key of epoch 2 or later
    assert r.open(m.memory_id, record, ciphertext).data == b"plan v1"  # what it had, it keeps


def removed_member_memory() -> tuple[Memory, LocalIdentity, EpochKey]:
    """As a store holds it: the owner grants the writer and ``me`` write; the writer (as any writer may)
    starts epoch 2. Returns the memory, ``me`` and epoch 2."""
    m = Memory()
    me = m.world.identity("worker-5")
    m.grant(me, ACCESS_WRITE)
    e2 = new_epoch(m.writer.agent_id, m.writer.signing_key, m.memory_id, m.log.version, m.log.head, m.epoch1, NOW + 3)
    return m, me, e2


def test_the_client_refuses_a_current_epoch_and_a_key_copy_made_by_a_member_the_log_removed() -> None:
    # §18.5, §18.12: a store that serves an epoch of a removed member would have us write under a key it holds.
    m, me, e2 = removed_member_memory()
    revoke = m.entry(m.owner, CHANGE_REVOKE, m.writer, at=NOW + 4)
    # the owner removes the writer, with the next epoch made for the REVOKE's version (what an honest store keeps)
    honest = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, revoke.version, membership_entry_hash(m.memory_id, revoke), e2, NOW + 4)
    # before its removal was recorded, the removed writer made an epoch 3 of its own (it knows that key)
    forged = new_epoch(m.writer.agent_id, m.writer.signing_key, m.memory_id, m.log.version, m.log.head, e2, NOW + 4)
    m.log.append(revoke)
    state = client_for(m, me)._verify_state(m.memory_id, None, answer(m, for_member=me, epochs=[m.epoch1, e2, honest]))
    assert state.current_epoch == 3 and bytes(state.keys[3].key) == bytes(honest.key)
    seen: list[tuple[str, str, str]] = []
    fooled = MemoryClient(identity=me, address="127.0.0.1:1", service_id="gw-test", trust_bundle=m.world.trust, clock=lambda: NOW + 10, on_security=lambda *a: seen.append(a))
    with pytest.raises(SharedMemoryError) as error:
        fooled._verify_state(m.memory_id, None, answer(m, for_member=me, epochs=[m.epoch1, e2, forged], wrap_signer=m.writer))
    assert error.value.code == "bad_signature" and "revocation" in error.value.detail
    assert [(x[0], x[1]) for x in seen] == [("bad_signature", m.memory_id)]
    # the honest epoch with a copy handed out by the removed member: refused too
    assert code(lambda: client_for(m, me)._verify_state(m.memory_id, None, answer(m, for_member=me, epochs=[m.epoch1, e2, honest], wrap_signer=m.writer))) == "bad_signature"


def test_the_client_refuses_an_epoch_whose_creator_s_grant_had_expired() -> None:
    m = Memory()
    m.log.append(m.entry(m.owner, CHANGE_GRANT, m.outsider, ACCESS_WRITE, expires_at_ms=NOW + 5))
    late = new_epoch(m.outsider.agent_id, m.outsider.signing_key, m.memory_id, m.log.version, m.log.head, m.epoch1, NOW + 5)
    assert code(lambda: client_for(m, m.writer)._verify_state(m.memory_id, None, answer(m, for_member=m.writer, epochs=[m.epoch1, late], wrap_signer=m.outsider))) == "bad_signature"
    in_time = new_epoch(m.outsider.agent_id, m.outsider.signing_key, m.memory_id, m.log.version, m.log.head, m.epoch1, NOW + 4)
    assert client_for(m, m.writer)._verify_state(m.memory_id, None, answer(m, for_member=m.writer, epochs=[m.epoch1, in_time])).current_epoch == 2


def test_the_client_refuses_a_next_epoch_made_for_an_older_log_version_than_one_it_accepted() -> None:
    m, me, e2 = removed_member_memory()
    m.grant(m.world.identity("worker-6"), ACCESS_READ)
    e3 = new_epoch(m.owner.agent_id, m.owner.signing_key, m.memory_id, m.log.version, m.log.head, e2, NOW + 6)
    c = client_for(m, me)
    seen = c._verify_state(m.memory_id, None, answer(m, for_member=me, epochs=[m.epoch1, e2, e3]))
    assert seen.current_epoch == 3
    # the store drops the older records and serves an epoch 4 a writer made for log version 3, before epoch 3's
    back = new_epoch(m.writer.agent_id, m.writer.signing_key, m.memory_id, 3, m.log.hash_at(3) or b"", e3, NOW + 7)
    res = answer(m, for_member=me, after=m.log.version, epochs=[back], wrap_signer=m.writer)
    assert code(lambda: c._verify_state(m.memory_id, seen, res)) == "bad_signature"


class FakeStore:
    """A store in process for one client (its ``_call`` replaced): GetMemory answers the memory's signed records,
    WriteSegment accepts unless a rotation is due (``rotation_required``), and RotateEpoch refuses a writer's
    rotation nobody needed (``permission_denied``, §18.5) — the rules the real store applies to these calls."""

    def __init__(self, m: Memory, me: LocalIdentity) -> None:
        self.m, self.me = m, me
        self.epochs: list[Any] = [m.epoch1.record]
        self.wrap = m.wrap(m.epoch1, me)
        self.required = False
        self.calls: list[str] = []

    async def call(self, name: str, request: Any, response_type: type) -> Any:
        self.calls.append(name)
        m = self.m
        if name == "GetMemory":
            res = memory_pb2.GetMemoryResponse(rotation_required=self.required)
            res.memory.memory_id, res.memory.owner_id = m.memory_id, m.owner.agent_id
            res.memory.membership_version, res.memory.current_epoch = m.log.version, self.epochs[-1].epoch
            res.entries.extend(m.log.entries[request.after_version :])
            for who in (m.owner, m.writer, m.reader):
                res.members.add(member_id=who.agent_id, access=ACCESS_ADMIN, member_public_key=who.signing_key.public_key, certificate=who.certificate)
            res.epochs.extend(self.epochs)
            res.wrap.CopyFrom(self.wrap)
            return res
        if name == "WriteSegment":
            if self.required:
                raise SharedMemoryError("rotation_required", "a holder of the current key is no longer a member")
            assert request.record.key_epoch == self.epochs[-1].epoch
            return memory_pb2.WriteSegmentResponse(accepted=memory_pb2.WriteAccepted(version=request.record.version))
        if name == "RotateEpoch":
            member = m.log.member(self.me.agent_id)
            if member is None or (member.access < ACCESS_ADMIN and not self.required):
                raise SharedMemoryError("permission_denied", "only an admin rotates while no rotation is required")
            verify_epoch_record(m.log, request.epoch, self.epochs[-1])
            self.epochs.append(request.epoch)
            self.wrap = next(w for w in request.wraps if w.member_id == self.me.agent_id)
            self.required = False
            return memory_pb2.RotateEpochResponse(current_epoch=request.epoch.epoch)
        raise AssertionError(f"unexpected call {name}")


def test_a_writer_rotates_only_when_the_store_asks() -> None:
    import asyncio

    m = Memory()
    store = FakeStore(m, m.writer)
    c = client_for(m, m.writer)
    c._call = store.call  # type: ignore[method-assign]

    async def scenario() -> list[tuple[Any, ...]]:
        steps: list[tuple[Any, ...]] = []
        first = await c.write(m.memory_id, "plan", b"v1", previous_version=0)
        steps.append(("write", first.version, store.calls[:]))
        store.calls.clear()
        with pytest.raises(SharedMemoryError) as refused:  # a writer's rotation nobody needed
            await c.rotate(m.memory_id)
        steps.append(("rotate", refused.value.code, store.calls[:], len(store.epochs)))
        store.calls.clear()
        store.required = True  # e.g. a member's grant expired: writes wait for the next epoch
        second = await c.write(m.memory_id, "plan", b"v2", previous_version=1)
        steps.append(("write", second.version, store.calls[:], len(store.epochs)))
        await c.close()
        return steps

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == [
        ("write", 1, ["GetMemory", "WriteSegment"]),  # no rotation of its own
        ("rotate", "permission_denied", ["GetMemory", "RotateEpoch"], 1),
        ("write", 2, ["WriteSegment", "GetMemory", "RotateEpoch", "GetMemory", "WriteSegment"], 2),
    ]


def test_an_answer_that_does_not_verify_is_a_security_event() -> None:
    m = Memory()
    seen: list[tuple[str, str, str]] = []
    c = MemoryClient(identity=m.writer, address="127.0.0.1:1", service_id="gw-test", trust_bundle=m.world.trust, clock=lambda: NOW + 10, on_security=lambda *a: seen.append(a))
    res = answer(m, for_member=m.writer)
    res.entries[1].access = ACCESS_ADMIN
    assert code(lambda: c._verify_state(m.memory_id, None, res)) == "bad_signature"
    assert [(x[0], x[1]) for x in seen] == [("bad_signature", m.memory_id)]
    assert code(lambda: c._verify_state(m.memory_id, None, answer(m, for_member=m.writer))) == "ok"
    assert len(seen) == 1


def test_an_unreachable_store_is_unavailable_after_the_retry_budget_and_a_closed_client_is_cancelled() -> None:
    import asyncio

    m = Memory()

    async def scenario() -> tuple[str, str]:
        c = MemoryClient(identity=m.owner, address="127.0.0.1:1", service_id="gw-test", trust_bundle=m.world.trust, timeout=2.0, retry_unavailable=0.4)
        try:
            try:
                await c.list()
                first = "ok"
            except SharedMemoryError as error:
                first = error.code
        finally:
            await c.close()
        try:
            await c.get(m.memory_id)
            second = "ok"
        except SharedMemoryError as error:
            second = error.code
        return first, second

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == ("unavailable", "cancelled")


# --- the largest answer (docs/PROTOCOL.md §18.2) ----------------------------------------------------------

_OLD_RECEIVE_LIMIT = 2 * (1024 * 1024 + 40) + 65_536
_TIME = (1 << 53) - 1
_U32 = 0xFFFF_FFFF


def _long_id(prefix: str, i: int = 0) -> str:
    """A 128-byte agent id, distinct per ``i``."""
    return f"{prefix}-{i}.".ljust(128, "z")


def _largest_certificate(agent_id: str) -> Any:
    """A structurally valid certificate (encode_certificate accepts it) of exactly 4096 bytes."""
    from parley.identity import MAX_CERTIFICATE_BYTES, AgentCertificate, encode_certificate

    fields: dict[str, Any] = dict(
        version=1, agent_id=agent_id, identity_public_key=b"\x01" * 32, agent_type="t" * 64, valid_from_ms=_TIME - 1, valid_until_ms=_TIME, serial=b"\x02" * 16, issuer_key_id=b"\x03" * 16, signature=b"\x04" * 64
    )
    room = MAX_CERTIFICATE_BYTES - AgentCertificate(**fields).ByteSize()
    full = room // 131  # 128-byte capabilities: tag 1, length 2
    caps = [f"{i:02d}".ljust(128, "c") for i in range(full)]
    caps.append("99".ljust(room - full * 131 - 2, "c"))
    cert = AgentCertificate(**fields, capabilities=caps)
    assert len(encode_certificate(cert)) == MAX_CERTIFICATE_BYTES
    return cert


def test_a_get_memory_answer_at_every_maximum_encodes_to_the_bound() -> None:
    from parley.memory import names

    def entry(change: int) -> Any:
        return memory_pb2.MembershipEntry(
            version=names.MAX_MEMBERSHIP_ENTRIES, previous_hash=b"\xab" * 32, change=change, member_id=_long_id("member"), access=ACCESS_ADMIN, member_public_key=b"\xab" * 32,
            expires_at_ms=_TIME, timestamp_ms=_TIME, signer_id=_long_id("signer"), creation_nonce=b"\xab" * 16 if change == names.CHANGE_CREATE else b"", signature=b"\xab" * 64,
        )  # fmt: skip

    epoch = memory_pb2.EpochRecord(
        epoch=_U32, key_commitment=b"\xab" * 32, back_link=b"\xab" * 72, membership_version=names.MAX_MEMBERSHIP_ENTRIES, membership_hash=b"\xab" * 32,
        created_at_ms=_TIME, creator_id=_long_id("creator"), signature=b"\xab" * 64,
    )  # fmt: skip
    wrap = memory_pb2.KeyWrap(epoch=_U32, member_id=_long_id("member"), member_public_key=b"\xab" * 32, sealed_key=b"\xab" * names.MAX_SEALED_KEY_BYTES, signer_id=_long_id("signer"), signature=b"\xab" * 64)
    res = memory_pb2.GetMemoryResponse(rotation_required=True)
    res.memory.MergeFrom(memory_pb2.MemorySummary(
        memory_id="mem-" + "f" * 32, owner_id=_long_id("owner"), access=ACCESS_ADMIN, created_at_ms=_TIME, expires_at_ms=_TIME,
        membership_version=names.MAX_MEMBERSHIP_ENTRIES, current_epoch=_U32,
    ))  # fmt: skip
    res.entries.append(entry(names.CHANGE_CREATE))
    res.entries.extend(entry(CHANGE_GRANT) for _ in range(names.MAX_MEMBERSHIP_ENTRIES - 1))
    for i in range(names.MAX_MEMBERS):
        res.members.add(member_id=_long_id("member", i), access=ACCESS_ADMIN, member_public_key=b"\xab" * 32, expires_at_ms=_TIME, certificate=_largest_certificate(_long_id("member", i)))
    res.epochs.extend(epoch for _ in range(names.MAX_EPOCH_RECORDS))
    res.wrap.CopyFrom(wrap)
    u64 = (1 << 64) - 1
    res.usage.MergeFrom(memory_pb2.MemoryUsage(bytes=u64, segments=u64, max_bytes=u64, max_segments=u64, owner_bytes=u64, owner_segments=u64, owner_max_bytes=u64, owner_max_segments=u64))

    assert entry(CHANGE_GRANT).ByteSize() == names.MAX_MEMBERSHIP_ENTRY_BYTES == 421
    assert epoch.ByteSize() == names.MAX_EPOCH_RECORD_BYTES == 357
    assert wrap.ByteSize() == names.MAX_KEY_WRAP_BYTES == 657
    assert res.members[0].ByteSize() == names.MAX_MEMORY_MEMBER_BYTES == 4275
    # The same bound as the TypeScript SDK's (packages/memory/src/limits.ts), and the client admits it.
    assert res.ByteSize() == names.MAX_GET_MEMORY_RESPONSE_BYTES == 5_781_963
    assert names.MEMORY_MAX_RECEIVE_BYTES >= names.MAX_GET_MEMORY_RESPONSE_BYTES > _OLD_RECEIVE_LIMIT
    # The shapes the client checks accept every item at these maxima, and nothing beyond.
    from parley.memory.model import assert_epoch_record_shape, assert_key_wrap_shape, assert_membership_entry_shape

    assert_membership_entry_shape(entry(names.CHANGE_CREATE))
    assert_epoch_record_shape(epoch)
    assert_key_wrap_shape(wrap)
    too_long = memory_pb2.KeyWrap()
    too_long.CopyFrom(wrap)
    too_long.sealed_key = b"\xab" * (names.MAX_SEALED_KEY_BYTES + 1)
    assert code(lambda: assert_key_wrap_shape(too_long)) == "malformed"


def test_the_client_reads_an_answer_larger_than_the_old_receive_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in store on loopback answers GetMemory with a true answer of about 2.4 MB (256 members with
    ~4 KB certificates, 3500 epochs, 128-byte ids): the client reads it; with the old limit it could not."""
    import asyncio

    import grpc

    from parley import memory as memory_module
    from parley.identity import encode_certificate, issue_certificate
    from parley.memory import client as client_module
    from parley.memory.layouts import epoch_layout

    from .helpers import DAY

    world = World()

    def large(agent_id: str) -> LocalIdentity:
        key = crypto.SigningKey.generate()
        caps = [f"{i:02d}".ljust(127, "c") for i in range(29)]
        cert = issue_certificate(
            world.issuer, agent_id=agent_id, identity_public_key=key.public_key, agent_type="worker", capabilities=caps,
            valid_from_ms=NOW - DAY, valid_until_ms=NOW + 30 * DAY, serial=crypto.random_bytes(16),
        )  # fmt: skip
        assert 3900 < len(encode_certificate(cert)) <= 4096
        return LocalIdentity(agent_id, key, cert)

    owner = large(_long_id("owner"))
    members = [large(_long_id("member", i)) for i in range(255)]
    memory_id, create = create_entry(owner.agent_id, owner.signing_key, now_ms=NOW)
    log = Membership.create(create, memory_id)
    first = new_epoch(owner.agent_id, owner.signing_key, memory_id, 1, log.head, None, NOW)
    for m in members:
        log.append(change_entry(owner.agent_id, owner.signing_key, log, change=CHANGE_GRANT, member_id=m.agent_id, public_key=m.signing_key.public_key, access=ACCESS_WRITE, now_ms=NOW + 1))
    # Signed epoch records (their keys are never needed here), then a real current epoch with the owner's copy.
    records = [first.record]
    for e in range(2, 3500):
        r = memory_pb2.EpochRecord(
            epoch=e, key_commitment=crypto.random_bytes(32), back_link=crypto.random_bytes(72), membership_version=log.version, membership_hash=log.head,
            created_at_ms=NOW + 2, creator_id=owner.agent_id,
        )  # fmt: skip
        r.signature = owner.signing_key.sign(epoch_layout(memory_id, r))
        records.append(r)
    current = new_epoch(owner.agent_id, owner.signing_key, memory_id, log.version, log.head, EpochKey(records[-1], bytearray(crypto.random_bytes(32))), NOW + 2)
    records.append(current.record)
    res = memory_pb2.GetMemoryResponse()
    res.memory.MergeFrom(memory_pb2.MemorySummary(memory_id=memory_id, owner_id=owner.agent_id, access=ACCESS_ADMIN, membership_version=log.version, current_epoch=current.record.epoch))
    res.entries.extend(log.entries)
    for who, access in [(owner, ACCESS_ADMIN)] + [(m, ACCESS_WRITE) for m in members]:
        res.members.add(member_id=who.agent_id, access=access, member_public_key=who.signing_key.public_key, certificate=who.certificate)
    res.epochs.extend(records)
    res.wrap.CopyFrom(wrap_key(owner.agent_id, owner.signing_key, memory_id, current, owner.agent_id, owner.signing_key.public_key))
    body = res.SerializeToString()
    assert len(body) > _OLD_RECEIVE_LIMIT

    async def get_memory(request: bytes, context: Any) -> bytes:
        return body

    async def scenario() -> tuple[Any, str]:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("parley.v1.MemoryService", {"GetMemory": grpc.unary_unary_rpc_method_handler(get_memory)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            c = memory_module.MemoryClient(identity=owner, address=f"127.0.0.1:{port}", service_id="gw-test", trust_bundle=world.trust, clock=lambda: NOW + 10, retry_unavailable=0)
            try:
                info = await c.get(memory_id)
            finally:
                await c.close()
            monkeypatch.setattr(client_module, "MEMORY_MAX_RECEIVE_BYTES", _OLD_RECEIVE_LIMIT)
            old = memory_module.MemoryClient(identity=owner, address=f"127.0.0.1:{port}", service_id="gw-test", trust_bundle=world.trust, clock=lambda: NOW + 10, retry_unavailable=0)
            try:
                await old.get(memory_id)
                refused = "ok"
            except SharedMemoryError as error:
                refused = error.code
            finally:
                await old.close()
            return info, refused
        finally:
            await server.stop(None)

    info, refused = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert info.current_epoch == 3500
    assert len(info.members) == 256
    assert refused == "too_large"
