"""The shared-memory model (docs/PROTOCOL.md §18.4–§18.7): the shape rules of every signed record,
the membership log folded into a member list (who may sign what), and the verification of epoch
records, key copies and write records against it.

A client applies these rules to everything the store returns: the store is trusted to enforce
access, not for integrity. It can refuse or withhold, but whatever it forges or alters is detected
here (``bad_signature``, ``decrypt_failed``, ``replay``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import crypto
from ..identity import has_unknown_fields, is_agent_id
from .layouts import ZERO_HASH, epoch_layout, key_wrap_layout, memory_id_of, membership_entry_hash, membership_layout, write_layout
from .names import (
    ACCESS_ADMIN,
    ACCESS_READ,
    ACCESS_UNSPECIFIED,
    ACCESS_WRITE,
    BACK_LINK_BYTES,
    CHANGE_CREATE,
    CHANGE_GRANT,
    CHANGE_REVOKE,
    CREATION_NONCE_BYTES,
    HASH_BYTES,
    MAX_MEMBERSHIP_ENTRIES,
    MAX_SAFE_INTEGER,
    MAX_SEALED_KEY_BYTES,
    MAX_SEGMENT_CIPHERTEXT_BYTES,
    MAX_U32,
    MEMORY_CLOCK_SKEW_MS,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    fail,
    is_segment_id,
)

_XAEAD_OVERHEAD = 40


def _eq(a: bytes, b: bytes) -> bool:
    return len(a) == len(b) and crypto.constant_time_equal(a, b)


def _time_ok(value: int) -> bool:
    return 0 <= value <= MAX_SAFE_INTEGER


def _epoch_ok(value: int) -> bool:
    return 1 <= value <= MAX_U32


# --- shapes: lengths, ranges, patterns, no unknown fields (``malformed``) ---------------------------


def assert_membership_entry_shape(e: Any, name: str = "entry") -> Any:
    if not 1 <= e.version <= MAX_MEMBERSHIP_ENTRIES:
        raise fail("malformed", f"{name}.version must be 1..{MAX_MEMBERSHIP_ENTRIES}")
    if len(e.previous_hash) != HASH_BYTES:
        raise fail("malformed", f"{name}.previous_hash must be {HASH_BYTES} bytes")
    if e.change not in (CHANGE_CREATE, CHANGE_GRANT, CHANGE_REVOKE):
        raise fail("malformed", f"{name}.change is not defined")
    if not is_agent_id(e.member_id):
        raise fail("malformed", f"{name}.member_id must be an agent id")
    if e.access not in (ACCESS_UNSPECIFIED, ACCESS_READ, ACCESS_WRITE, ACCESS_ADMIN):
        raise fail("malformed", f"{name}.access is not defined")
    if len(e.member_public_key) != PUBLIC_KEY_BYTES:
        raise fail("malformed", f"{name}.member_public_key must be {PUBLIC_KEY_BYTES} bytes")
    if not _time_ok(e.expires_at_ms) or not _time_ok(e.timestamp_ms):
        raise fail("malformed", f"{name} times must be 0..2^53-1 ms")
    if not is_agent_id(e.signer_id):
        raise fail("malformed", f"{name}.signer_id must be an agent id")
    nonce_bytes = CREATION_NONCE_BYTES if e.change == CHANGE_CREATE else 0
    if len(e.creation_nonce) != nonce_bytes:
        raise fail("malformed", f"{name}.creation_nonce must be {nonce_bytes} bytes for this change")
    if len(e.signature) != SIGNATURE_BYTES:
        raise fail("malformed", f"{name}.signature must be {SIGNATURE_BYTES} bytes")
    if has_unknown_fields(e):
        raise fail("malformed", f"{name} carries fields v1 does not define")
    return e


def assert_epoch_record_shape(r: Any, name: str = "epoch") -> Any:
    if not _epoch_ok(r.epoch):
        raise fail("malformed", f"{name}.epoch must be 1..2^32-1")
    if len(r.key_commitment) != HASH_BYTES:
        raise fail("malformed", f"{name}.key_commitment must be {HASH_BYTES} bytes")
    # Epoch 1 has no back link; a later epoch has one of 72 bytes, or none when it is a cut (§18.5: only with a
    # REVOKE, which verify_epoch_record checks against the log).
    if r.epoch == 1 and len(r.back_link) != 0:
        raise fail("malformed", f"{name}.back_link must be empty for epoch 1")
    if r.epoch > 1 and len(r.back_link) not in (0, BACK_LINK_BYTES):
        raise fail("malformed", f"{name}.back_link must be {BACK_LINK_BYTES} bytes (or empty for a cut) for epoch {r.epoch}")
    if not 1 <= r.membership_version <= MAX_MEMBERSHIP_ENTRIES:
        raise fail("malformed", f"{name}.membership_version must be 1..{MAX_MEMBERSHIP_ENTRIES}")
    if len(r.membership_hash) != HASH_BYTES:
        raise fail("malformed", f"{name}.membership_hash must be {HASH_BYTES} bytes")
    if not _time_ok(r.created_at_ms):
        raise fail("malformed", f"{name}.created_at_ms must be 0..2^53-1")
    if not is_agent_id(r.creator_id):
        raise fail("malformed", f"{name}.creator_id must be an agent id")
    if len(r.signature) != SIGNATURE_BYTES:
        raise fail("malformed", f"{name}.signature must be {SIGNATURE_BYTES} bytes")
    if has_unknown_fields(r):
        raise fail("malformed", f"{name} carries fields v1 does not define")
    return r


def assert_key_wrap_shape(w: Any, name: str = "wrap") -> Any:
    if not _epoch_ok(w.epoch):
        raise fail("malformed", f"{name}.epoch must be 1..2^32-1")
    if not is_agent_id(w.member_id):
        raise fail("malformed", f"{name}.member_id must be an agent id")
    if len(w.member_public_key) != PUBLIC_KEY_BYTES:
        raise fail("malformed", f"{name}.member_public_key must be {PUBLIC_KEY_BYTES} bytes")
    if not 48 + 32 <= len(w.sealed_key) <= MAX_SEALED_KEY_BYTES:
        raise fail("malformed", f"{name}.sealed_key has an impossible length")
    if not is_agent_id(w.signer_id):
        raise fail("malformed", f"{name}.signer_id must be an agent id")
    if len(w.signature) != SIGNATURE_BYTES:
        raise fail("malformed", f"{name}.signature must be {SIGNATURE_BYTES} bytes")
    if has_unknown_fields(w):
        raise fail("malformed", f"{name} carries fields v1 does not define")
    return w


def assert_write_record_shape(r: Any, name: str = "record") -> Any:
    if not is_segment_id(r.segment_id):
        raise fail("malformed", f"{name}.segment_id must be 1..128 chars of [a-z0-9._:/-] starting with [a-z0-9]")
    if not 0 <= r.previous_version < MAX_SAFE_INTEGER:
        raise fail("malformed", f"{name}.previous_version out of range")
    if r.version != r.previous_version + 1:
        raise fail("malformed", f"{name}.version must be previous_version + 1")
    if not _epoch_ok(r.key_epoch):
        raise fail("malformed", f"{name}.key_epoch must be 1..2^32-1")
    if len(r.ciphertext_digest) != HASH_BYTES:
        raise fail("malformed", f"{name}.ciphertext_digest must be {HASH_BYTES} bytes")
    if not _XAEAD_OVERHEAD <= r.ciphertext_bytes <= MAX_SEGMENT_CIPHERTEXT_BYTES:
        raise fail("malformed", f"{name}.ciphertext_bytes must be {_XAEAD_OVERHEAD}..{MAX_SEGMENT_CIPHERTEXT_BYTES}")
    if not is_agent_id(r.writer_id):
        raise fail("malformed", f"{name}.writer_id must be an agent id")
    if not _time_ok(r.timestamp_ms) or not _time_ok(r.expires_at_ms):
        raise fail("malformed", f"{name} times must be 0..2^53-1 ms")
    if len(r.signature) != SIGNATURE_BYTES:
        raise fail("malformed", f"{name}.signature must be {SIGNATURE_BYTES} bytes")
    if has_unknown_fields(r):
        raise fail("malformed", f"{name} carries fields v1 does not define")
    return r


# --- the membership log ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One member as the log makes it."""

    member_id: str
    access: int
    #: The Ed25519 identity key its key copies are sealed to and its signatures verify under.
    public_key: bytes
    #: Grant expiry, ms; 0: never.
    expires_at_ms: int
    #: The log version of the entry that made it what it is.
    version: int


def is_active(member: Member, now_ms: int) -> bool:
    """Whether a member's grant is in force at ``now_ms`` (expiry is exclusive; the owner's never expires)."""
    return member.expires_at_ms == 0 or now_ms < member.expires_at_ms


class Membership:
    """A verified membership log and the member list it folds to (§18.4).

    Entry 1 is the owner's CREATE; each later entry is a GRANT or REVOKE signed by an admin whose
    grant was in force at the entry's timestamp (admin grants and revocations: by the owner), chained
    by hash. :meth:`append` verifies before it changes anything: a refused entry leaves the log as it was.

    Folding is linear in the log: the member list at the head is one dict changed in place, and the
    list as of an earlier version is read from each agent's own history of changes (one item per
    entry that names it), so no entry copies the member list.
    """

    def __init__(self, memory_id: str, create: Any) -> None:
        self.memory_id = memory_id
        self.owner_id: str = create.member_id
        self.owner_public_key = bytes(create.member_public_key)
        self.expires_at_ms: int = create.expires_at_ms
        self.created_at_ms: int = create.timestamp_ms
        self._entries: list[Any] = []
        self._hashes: list[bytes] = []
        #: The member list at the head.
        self._members: dict[str, Member] = {}
        #: agent id → the versions of the entries that named it, and what each made it (None: revoked), in log order.
        self._history_versions: dict[str, list[int]] = {}
        self._history: dict[str, list[Member | None]] = {}
        #: agent id → {key: highest level held under that key}
        self._keys: dict[str, dict[bytes, int]] = {}
        self._last_revoke = 0

    @classmethod
    def create(cls, entry: Any, memory_id: str | None = None) -> Membership:
        """Verifies a CREATE entry (version 1, the owner signing its own grant, the memory id derived from it).

        Raises ``malformed``, ``bad_signature``, ``identity_mismatch`` (the entry derives another memory id).
        """
        e = assert_membership_entry_shape(entry)
        if e.version != 1 or e.change != CHANGE_CREATE:
            raise fail("malformed", "membership entry 1 must be CREATE")
        if not _eq(bytes(e.previous_hash), ZERO_HASH):
            raise fail("malformed", "entry 1 previous_hash must be 32 zero bytes")
        if e.access != ACCESS_ADMIN:
            raise fail("malformed", "CREATE must give the owner ADMIN")
        if e.signer_id != e.member_id:
            raise fail("malformed", "CREATE must be signed by the owner")
        if e.expires_at_ms != 0 and e.expires_at_ms <= e.timestamp_ms:
            raise fail("malformed", "memory expiry must be after its creation")
        derived = memory_id_of(e.member_id, bytes(e.member_public_key), bytes(e.creation_nonce))
        if memory_id is not None and derived != memory_id:
            raise fail("identity_mismatch", "CREATE entry derives another memory id")
        mid = memory_id if memory_id is not None else derived
        if not crypto.ed25519_verify(bytes(e.signature), membership_layout(mid, e), bytes(e.member_public_key)):
            raise fail("bad_signature", "CREATE entry signature does not verify")
        log = cls(mid, e)
        owner = Member(e.member_id, ACCESS_ADMIN, bytes(e.member_public_key), 0, 1)
        log._commit(e, owner.member_id, owner)
        return log

    def copy(self) -> Membership:
        """An independent copy (entries are shared, never changed): append to it and keep this one as it was,
        so that an answer refused half-way through leaves the log it started from unchanged."""
        other = Membership.__new__(Membership)
        other.memory_id = self.memory_id
        other.owner_id = self.owner_id
        other.owner_public_key = self.owner_public_key
        other.expires_at_ms = self.expires_at_ms
        other.created_at_ms = self.created_at_ms
        other._entries = list(self._entries)
        other._hashes = list(self._hashes)
        other._members = dict(self._members)
        other._history_versions = {k: list(v) for k, v in self._history_versions.items()}
        other._history = {k: list(v) for k, v in self._history.items()}
        other._keys = {k: dict(v) for k, v in self._keys.items()}
        other._last_revoke = self._last_revoke
        return other

    @property
    def version(self) -> int:
        """The head version (number of entries)."""
        return len(self._entries)

    @property
    def head_timestamp_ms(self) -> int:
        """``timestamp_ms`` of the head entry: the next entry's may not be earlier."""
        return int(self._entries[-1].timestamp_ms)

    @property
    def head(self) -> bytes:
        """entry_hash of the head entry."""
        return self._hashes[-1]

    @property
    def entries(self) -> list[Any]:
        return list(self._entries)

    @property
    def last_revoke_version(self) -> int:
        """The version of the last REVOKE entry, 0 when there is none: every epoch in use is made for this
        version or a later one (§18.5)."""
        return self._last_revoke

    def entry_at(self, version: int) -> Any | None:
        """The entry at ``version``, None beyond the log."""
        return self._entries[version - 1] if 1 <= version <= self.version else None

    def hash_at(self, version: int) -> bytes | None:
        return self._hashes[version - 1] if 1 <= version <= self.version else None

    def member(self, member_id: str) -> Member | None:
        """A member at the head (expired grants included)."""
        return self._members.get(member_id)

    def member_at(self, member_id: str, version: int) -> Member | None:
        """A member as of ``version`` (a binary search in that agent's history)."""
        if not 1 <= version <= self.version:
            return None
        versions = self._history_versions.get(member_id)
        if versions is None:
            return None
        i = bisect.bisect_right(versions, version)
        return self._history[member_id][i - 1] if i > 0 else None

    def members(self) -> list[Member]:
        return list(self._members.values())

    def grants_between(self, member_id: str, low: int, high: int) -> list[tuple[Member, int | None]]:
        """What ``member_id`` was at each log version from ``low`` to ``high`` (inclusive), once per entry that
        made it so (revocations left out), each with the timestamp of the member's next entry (the one that
        replaced or revoked it), None when there is none yet."""
        versions = self._history_versions.get(member_id)
        if versions is None or low > high:
            return []
        history = self._history[member_id]
        start = max(bisect.bisect_right(versions, low) - 1, 0)
        out: list[tuple[Member, int | None]] = []
        for i in range(start, len(versions)):
            if versions[i] > high:
                break
            member = history[i]
            if member is None:
                continue
            nxt = int(self._entries[versions[i + 1] - 1].timestamp_ms) if i + 1 < len(versions) else None
            out.append((member, nxt))
        return out

    def active(self, now_ms: int) -> list[Member]:
        """The members whose grants are in force at ``now_ms`` (the owner always), ordered by id."""
        return sorted((m for m in self.members() if is_active(m, now_ms)), key=lambda m: m.member_id.encode())

    def keys_of(self, agent_id: str, min_access: int = ACCESS_READ) -> list[bytes]:
        """Every key ``agent_id`` has held in this log at ``min_access`` or above."""
        return [k for k, access in self._keys.get(agent_id, {}).items() if access >= min_access]

    def verifies_as(self, agent_id: str, min_access: int, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` over ``message`` verifies under a key ``agent_id`` held at ``min_access`` or above."""
        return any(crypto.ed25519_verify(signature, message, k) for k in self.keys_of(agent_id, min_access))

    def append(self, entry: Any) -> None:
        """Verifies and appends the next entry (GRANT or REVOKE), in the §18.4 rule order.

        Raises ``malformed``, ``conflict`` (not the next version or another previous hash),
        ``permission_denied`` (the signer may not make this change), ``bad_signature``.
        """
        e = assert_membership_entry_shape(entry)
        if e.version != self.version + 1:
            raise fail("conflict", f"membership entry has version {e.version}, the log is at {self.version}")
        if not _eq(bytes(e.previous_hash), self.head):
            raise fail("conflict", "membership entry does not follow the head of the log")
        if e.change == CHANGE_CREATE:
            raise fail("malformed", "only entry 1 may be CREATE")
        if e.timestamp_ms < self.head_timestamp_ms:
            # Entry times never go down along the log: an entry dated before the head it follows was not made
            # after it (a backdated entry of an admin whose grant has expired since, §18.4).
            raise fail("malformed", f"membership entry {e.version} is dated before the entry it follows")
        signer = self._members.get(e.signer_id)
        if signer is None or signer.access != ACCESS_ADMIN or not is_active(signer, e.timestamp_ms):
            raise fail("permission_denied", f"{e.signer_id} is not an admin of this memory")
        if e.member_id == self.owner_id:
            raise fail("permission_denied", "the owner cannot be granted or revoked")
        current = self._members.get(e.member_id)
        changed: Member | None = None
        if e.change == CHANGE_GRANT:
            if e.access == ACCESS_UNSPECIFIED:
                raise fail("malformed", "GRANT needs an access level")
            if e.expires_at_ms != 0 and e.expires_at_ms <= e.timestamp_ms:
                raise fail("malformed", "grant expiry must be after the entry")
            if (e.access == ACCESS_ADMIN or (current is not None and current.access == ACCESS_ADMIN)) and e.signer_id != self.owner_id:
                raise fail("permission_denied", "only the owner grants or changes admin")
            changed = Member(e.member_id, e.access, bytes(e.member_public_key), e.expires_at_ms, e.version)
        else:
            if current is None:
                raise fail("malformed", f"{e.member_id} is not a member")
            if e.access != ACCESS_UNSPECIFIED or e.expires_at_ms != 0:
                raise fail("malformed", "REVOKE carries no access level or expiry")
            if not _eq(bytes(e.member_public_key), current.public_key):
                raise fail("malformed", "REVOKE must name the member's key on record")
            if current.access == ACCESS_ADMIN and e.signer_id != self.owner_id:
                raise fail("permission_denied", "only the owner revokes an admin")
        if not crypto.ed25519_verify(bytes(e.signature), membership_layout(self.memory_id, e), signer.public_key):
            raise fail("bad_signature", "membership entry signature does not verify")
        self._commit(e, e.member_id, changed)

    def _commit(self, e: Any, member_id: str, member: Member | None) -> None:
        """Applies a verified entry: ``member`` is what ``member_id`` becomes (None: revoked). Nothing here can fail."""
        self._entries.append(e)
        self._hashes.append(membership_entry_hash(self.memory_id, e))
        if member is None:
            self._members.pop(member_id, None)
            self._last_revoke = e.version
        else:
            self._members[member_id] = member
            keys = self._keys.setdefault(member_id, {})
            keys[member.public_key] = max(keys.get(member.public_key, 0), member.access)
        self._history_versions.setdefault(member_id, []).append(e.version)
        self._history.setdefault(member_id, []).append(member)


# --- epochs, key copies and writes, verified against a log ----------------------------------------


def is_cut(record: Any) -> bool:
    """Whether an epoch record is a cut (§18.5): an epoch after the first with no back link, so no key before
    it can be reached from it or from any later epoch."""
    return int(record.epoch) > 1 and len(record.back_link) == 0


def verify_epoch_record(log: Membership, record: Any, previous: Any | None) -> None:
    """Verifies an epoch record: shape, chain (``previous`` is the record before it), the membership
    version it names, its creator (the owner for epoch 1; otherwise a writer or admin at that version
    whose grant was in force at the record's ``created_at_ms``) and the creator's signature. A cut (an
    epoch > 1 without a back link) is accepted only when it is made for a REVOKE entry's version by the
    admin who signed that entry (§18.5): a cut costs a logged removal, and no writer can make one.

    Raises ``malformed``, ``conflict`` (out of sequence, or beyond the log), ``permission_denied``, ``bad_signature``.
    """
    r = assert_epoch_record_shape(record)
    if previous is not None and r.epoch != previous.epoch + 1:
        raise fail("conflict", f"epoch {r.epoch} does not follow epoch {previous.epoch}")
    if previous is not None and r.membership_version < previous.membership_version:
        raise fail("malformed", "epochs must not go back in the membership log")
    h = log.hash_at(r.membership_version)
    if h is None:
        raise fail("conflict", f"epoch {r.epoch} names membership version {r.membership_version}, beyond the log")
    if not _eq(h, bytes(r.membership_hash)):
        raise fail("bad_signature", f"epoch {r.epoch} names another membership log")
    if r.epoch == 1 and (r.membership_version != 1 or r.creator_id != log.owner_id):
        raise fail("malformed", "epoch 1 is made by the owner for membership version 1")
    if is_cut(r):
        entry = log.entry_at(r.membership_version)
        if entry is None or entry.change != CHANGE_REVOKE or entry.signer_id != r.creator_id:
            raise fail("bad_signature", f"epoch {r.epoch} has no back link (a cut) but is not made for a revocation its creator {r.creator_id} signed")
    creator = log.member_at(r.creator_id, r.membership_version)
    if creator is None or creator.access < ACCESS_WRITE:
        raise fail("permission_denied", f"{r.creator_id} could not start epoch {r.epoch}")
    if not is_active(creator, r.created_at_ms):
        raise fail("permission_denied", f"{r.creator_id}'s grant had expired when epoch {r.epoch} was made")
    if not crypto.ed25519_verify(bytes(r.signature), epoch_layout(log.memory_id, r), creator.public_key):
        raise fail("bad_signature", f"epoch {r.epoch} signature does not verify")


def verify_current_epoch(log: Membership, current: Any, known: Iterable[Any] = ()) -> None:
    """Checks that ``current`` (verified with :func:`verify_epoch_record`) may be the epoch new writes use
    (§18.5): it is made for the log's last REVOKE or later — every revocation starts an epoch made for its
    own version, so an older one is an epoch a removed member could have made — and for no earlier log
    version than any epoch already accepted (``known``).

    Raises ``conflict``.
    """
    if current.membership_version < log.last_revoke_version:
        raise fail(
            "conflict",
            f"epoch {current.epoch} is made for membership version {current.membership_version}, before the revocation at version {log.last_revoke_version}",
        )
    for k in known:
        if k.membership_version > current.membership_version:
            raise fail("conflict", f"epoch {current.epoch} goes back in the membership log from epoch {k.epoch}")


def verify_key_wrap(log: Membership, wrap: Any) -> None:
    """Verifies a key copy's shape, that it is sealed to a key its member held in the log, and its
    signature by a member on record at the head (not removed) with write or admin access, under a key
    it held with write access (the epoch's creator, or an admin granting). It does not open it (only
    the member can).

    Raises ``malformed``, ``permission_denied`` (sealed to a key its member never held), ``bad_signature`` (signer).
    """
    w = assert_key_wrap_shape(wrap)
    if not any(_eq(k, bytes(w.member_public_key)) for k in log.keys_of(w.member_id)):
        raise fail("permission_denied", f"key copy for {w.member_id} is sealed to a key it never held here")
    signer = log.member(w.signer_id)
    if signer is None or signer.access < ACCESS_WRITE:
        raise fail("bad_signature", f"key copy is signed by {w.signer_id}, not a writer of this memory now")
    if not log.verifies_as(w.signer_id, ACCESS_WRITE, bytes(w.signature), key_wrap_layout(log.memory_id, w)):
        raise fail("bad_signature", "key copy signature does not verify")


def verify_write_record(log: Membership, record: Any, epochs: Mapping[int, Any] | None = None) -> None:
    """Verifies a write record's shape and its writer's signature under a key the writer held with
    write access (a writer removed later signed its earlier writes validly).

    With ``epochs`` (epoch number → verified record), the writer must have held write access at a log
    version while the record's epoch was current — from that epoch's ``membership_version`` to the next
    epoch's (the head for the current one) — and the record must be dated before that grant's expiry and
    the clock skew, and no later than the member's next entry (which ended that grant) and twice the clock
    skew: a removed or expired writer cannot, with the store, have a new write accepted under an epoch it
    held once. Without ``epochs`` (a record checked on its own, as the conformance vectors do) any point in
    the log will do.

    Raises ``malformed``, ``bad_signature``.
    """
    r = assert_write_record_shape(record)
    layout = write_layout(log.memory_id, r)
    if epochs is None:
        if not log.verifies_as(r.writer_id, ACCESS_WRITE, bytes(r.signature), layout):
            raise fail("bad_signature", f"write record of {r.segment_id} v{r.version} does not verify as {r.writer_id}'s")
        return
    epoch = epochs.get(r.key_epoch)
    if epoch is None:
        raise fail("bad_signature", f"write record of {r.segment_id} v{r.version} names epoch {r.key_epoch}, which the store did not describe")
    following = [e for n, e in epochs.items() if n > r.key_epoch]
    low = int(epoch.membership_version)
    high = min(int(e.membership_version) for e in following) if following else log.version
    verified: dict[bytes, bool] = {}  # one signature check per key
    late = False
    for member, next_entry_ms in log.grants_between(r.writer_id, low, high):
        if member.access < ACCESS_WRITE:
            continue
        ok = verified.get(member.public_key)
        if ok is None:
            ok = verified[member.public_key] = crypto.ed25519_verify(bytes(r.signature), layout, member.public_key)
        if not ok:
            continue
        # Stamped within the skew of the store's clock: an honest write made while the grant was in force is
        # dated before its expiry and the skew, and no later than the entry that ended it (itself stamped within
        # the skew) and twice the skew.
        if member.expires_at_ms != 0 and r.timestamp_ms >= member.expires_at_ms + MEMORY_CLOCK_SKEW_MS:
            late = True
            continue
        if next_entry_ms is not None and r.timestamp_ms > next_entry_ms + 2 * MEMORY_CLOCK_SKEW_MS:
            late = True
            continue
        return
    if late:
        raise fail("bad_signature", f"write record of {r.segment_id} v{r.version} is dated after {r.writer_id}'s grant ended")
    raise fail("bad_signature", f"write record of {r.segment_id} v{r.version} does not verify as {r.writer_id}'s while epoch {r.key_epoch} was current")


def rotation_due(log: Membership, current: Any, now_ms: int) -> bool:
    """Whether writes must wait for a new epoch (§18.5), decided from the verified log and not the store's
    word: a member on record whose grant has expired by ``now_ms`` could hold the key of ``current`` (the
    current epoch's record) unless that epoch was made for its entry's version or later and after its expiry."""
    for m in log.members():
        if m.expires_at_ms == 0 or m.expires_at_ms > now_ms:
            continue
        if not (current.membership_version >= m.version and current.created_at_ms >= m.expires_at_ms):
            return True
    return False


def same_write(a: Any, b: Any) -> bool:
    """Whether two write records are the same signed write (a retry of one write)."""
    return _eq(bytes(a.signature), bytes(b.signature)) and _eq(bytes(a.ciphertext_digest), bytes(b.ciphertext_digest)) and a.version == b.version
