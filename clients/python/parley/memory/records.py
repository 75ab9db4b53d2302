"""Building and opening the signed and sealed records of shared memory (docs/PROTOCOL.md §18.4–§18.7)
on the member's side: membership entries, key epochs with their back links, key copies sealed to
members' identity keys, and encrypted, signed segment writes. Everything that touches an epoch key
is here; the store never runs any of it.

Epoch keys live in ``bytearray`` buffers that :meth:`EpochKey.wipe` zeroes (the best Python allows:
libsodium's bindings take immutable ``bytes`` copies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from .. import crypto
from ..crypto import CryptoError, SigningKey
from ..errors import SharedMemoryError
from ..v1 import memory_pb2
from .layouts import (
    ZERO_HASH,
    back_link_ad,
    epoch_layout,
    key_commitment,
    key_from_wrap_plaintext,
    key_wrap_layout,
    memory_id_of,
    membership_layout,
    segment_ad,
    wrap_plaintext,
    write_layout,
)
from .model import Membership
from .names import ACCESS_ADMIN, ACCESS_UNSPECIFIED, CHANGE_CREATE, CHANGE_GRANT, CHANGE_REVOKE, CREATION_NONCE_BYTES, EPOCH_KEY_BYTES, MAX_SEGMENT_PLAINTEXT_BYTES, fail


def _eq(a: bytes, b: bytes) -> bool:
    return len(a) == len(b) and crypto.constant_time_equal(a, b)


class _CommitmentMismatch(SharedMemoryError):
    """``decrypt_failed`` from :func:`open_wrap` or :func:`follow_back_link` for a key that opened but does not
    match the record's commitment (see :func:`is_commitment_mismatch`)."""


def is_commitment_mismatch(error: BaseException) -> bool:
    """Whether ``error``, from :func:`open_wrap` or :func:`follow_back_link`, is a key copy or back link that opened,
    to a key of the right length and names, that does not match the commitment of the epoch record it was checked
    against — rather than one that does not open at all (or names another memory, epoch or member). Only the latter
    is provably its signer's fault (§18.5): a copy's signature does not cover the epoch's commitment, and epoch
    records are not chained, so a store can pair a genuine copy or back link with another genuine record of the same
    epoch (of a rotation that lost, say) that it does not match."""
    return isinstance(error, _CommitmentMismatch)


# --- membership entries (§18.4) ------------------------------------------------------------------------


def create_entry(
    owner_id: str, signing_key: SigningKey, *, now_ms: int, expires_at_ms: int = 0, creation_nonce: bytes | None = None
) -> tuple[str, Any]:
    """The CREATE entry of a new memory owned by ``owner_id``, and the memory id it derives."""
    nonce = crypto.random_bytes(CREATION_NONCE_BYTES) if creation_nonce is None else bytes(creation_nonce)
    memory_id = memory_id_of(owner_id, signing_key.public_key, nonce)
    entry = memory_pb2.MembershipEntry(
        version=1,
        previous_hash=ZERO_HASH,
        change=cast(Any, CHANGE_CREATE),
        member_id=owner_id,
        access=cast(Any, ACCESS_ADMIN),
        member_public_key=signing_key.public_key,
        expires_at_ms=expires_at_ms,
        timestamp_ms=now_ms,
        signer_id=owner_id,
        creation_nonce=nonce,
    )
    entry.signature = signing_key.sign(membership_layout(memory_id, entry))
    return memory_id, entry


def change_entry(
    signer_id: str, signing_key: SigningKey, log: Membership, *, change: int, member_id: str, public_key: bytes, access: int = ACCESS_UNSPECIFIED, expires_at_ms: int = 0, now_ms: int
) -> Any:
    """A GRANT or REVOKE entry at the head of ``log`` + 1, signed by ``signer_id``, dated ``now_ms`` or, when the
    head is dated later (another admin's clock ahead of ours), the head's time: entry times never go down."""
    if change not in (CHANGE_GRANT, CHANGE_REVOKE):
        raise fail("internal", "change_entry makes GRANT or REVOKE entries")
    now_ms = max(now_ms, log.head_timestamp_ms)
    entry = memory_pb2.MembershipEntry(
        version=log.version + 1,
        previous_hash=log.head,
        change=cast(Any, change),
        member_id=member_id,
        access=cast(Any, access if change == CHANGE_GRANT else ACCESS_UNSPECIFIED),
        member_public_key=public_key,
        expires_at_ms=expires_at_ms if change == CHANGE_GRANT else 0,
        timestamp_ms=now_ms,
        signer_id=signer_id,
        creation_nonce=b"",
    )
    entry.signature = signing_key.sign(membership_layout(log.memory_id, entry))
    return entry


# --- epochs (§18.5) --------------------------------------------------------------------------------------


@dataclass(slots=True)
class EpochKey:
    """An epoch key with its (verified) record. ``repr`` never shows the key."""

    record: Any
    key: bytearray

    @property
    def epoch(self) -> int:
        return int(self.record.epoch)

    def wipe(self) -> None:
        crypto.wipe(self.key)

    def __repr__(self) -> str:
        return f"EpochKey(epoch={self.epoch})"


def new_epoch(
    creator_id: str,
    signing_key: SigningKey,
    memory_id: str,
    membership_version: int,
    membership_hash: bytes,
    previous: EpochKey | None,
    now_ms: int,
    *,
    key: bytes | None = None,
    nonce: bytes | None = None,
) -> EpochKey:
    """A new epoch: a fresh random key, its commitment, the back link sealing the previous key under it
    (none for epoch 1), signed by the creator. ``key`` and ``nonce`` are for the conformance vectors only."""
    k = bytearray(crypto.random_bytes(EPOCH_KEY_BYTES) if key is None else key)
    epoch = 1 if previous is None else previous.epoch + 1
    link = b"" if previous is None else crypto.xaead_seal(k, bytes(previous.key), back_link_ad(memory_id, epoch), nonce=nonce)
    return _sign_epoch(creator_id, signing_key, memory_id, epoch, k, link, membership_version, membership_hash, now_ms)


def new_cut_epoch(creator_id: str, signing_key: SigningKey, memory_id: str, membership_version: int, membership_hash: bytes, epoch: int, now_ms: int) -> EpochKey:
    """A cut epoch (§18.5): epoch ``epoch`` (> 1) with a fresh random key and no back link, so no earlier key is
    reachable from it. Only the epoch of a REVOKE, made by the admin who signs that entry, and only when it holds
    no key of the current epoch (a member handed it a key copy or back link that does not open)."""
    if epoch < 2:
        raise fail("internal", "a cut is an epoch after the first")
    return _sign_epoch(creator_id, signing_key, memory_id, epoch, bytearray(crypto.random_bytes(EPOCH_KEY_BYTES)), b"", membership_version, membership_hash, now_ms)


def _sign_epoch(
    creator_id: str, signing_key: SigningKey, memory_id: str, epoch: int, k: bytearray, link: bytes, membership_version: int, membership_hash: bytes, now_ms: int
) -> EpochKey:
    record = memory_pb2.EpochRecord(
        epoch=epoch,
        key_commitment=key_commitment(memory_id, epoch, k),
        back_link=link,
        membership_version=membership_version,
        membership_hash=membership_hash,
        created_at_ms=now_ms,
        creator_id=creator_id,
    )
    record.signature = signing_key.sign(epoch_layout(memory_id, record))
    return EpochKey(record, k)


def follow_back_link(memory_id: str, later: EpochKey, record: Any) -> EpochKey:
    """The key of ``record``'s epoch from the key of the epoch after it (its back link).

    Raises ``decrypt_failed`` when the link does not open or the key does not match its commitment (then
    :func:`is_commitment_mismatch`).
    """
    if later.epoch != record.epoch + 1:
        raise fail("internal", "back links go one epoch at a time")
    if len(later.record.back_link) == 0:
        raise fail("decrypt_failed", f"epoch {record.epoch} is before the cut at epoch {later.epoch}: no key after the cut reaches it")
    try:
        opened = bytearray(crypto.xaead_open(later.key, bytes(later.record.back_link), back_link_ad(memory_id, later.epoch)))
    except CryptoError as error:
        raise fail("decrypt_failed", f"back link of epoch {later.epoch} does not open") from error
    if len(opened) != EPOCH_KEY_BYTES:
        crypto.wipe(opened)
        raise fail("decrypt_failed", f"the back link of epoch {later.epoch} does not hold a key")
    if not _eq(key_commitment(memory_id, record.epoch, opened), bytes(record.key_commitment)):
        crypto.wipe(opened)
        raise _CommitmentMismatch("decrypt_failed", f"the key behind epoch {later.epoch}'s back link does not match epoch {record.epoch}'s commitment")
    return EpochKey(record, opened)


# --- key copies (§18.6) ------------------------------------------------------------------------------


def wrap_key(signer_id: str, signing_key: SigningKey, memory_id: str, epoch: EpochKey, member_id: str, member_public_key: bytes) -> Any:
    """A member's copy of an epoch key: sealed to its identity key, signed by the signer."""
    plaintext = wrap_plaintext(memory_id, epoch.epoch, member_id, epoch.key)
    try:
        wrap = memory_pb2.KeyWrap(
            epoch=epoch.epoch,
            member_id=member_id,
            member_public_key=member_public_key,
            sealed_key=crypto.sealed_box_seal(bytes(plaintext), member_public_key),
            signer_id=signer_id,
        )
    finally:
        crypto.wipe(plaintext)
    wrap.signature = signing_key.sign(key_wrap_layout(memory_id, wrap))
    return wrap


def open_wrap(member_id: str, signing_key: SigningKey, memory_id: str, wrap: Any, record: Any) -> EpochKey:
    """Opens this member's copy of an epoch key with its identity secret key and checks the key against
    the epoch's signed commitment.

    Raises ``decrypt_failed`` (not sealed to this key, for another memory/epoch/member, or not the committed key: then
    :func:`is_commitment_mismatch`).
    """
    if wrap.epoch != record.epoch or wrap.member_id != member_id:
        raise fail("decrypt_failed", "key copy is for another epoch or member")
    try:
        plaintext = crypto.sealed_box_open(bytes(wrap.sealed_key), signing_key)
    except CryptoError as error:
        raise fail("decrypt_failed", f"key copy of epoch {wrap.epoch} does not open with this agent's identity key") from error
    try:
        key = key_from_wrap_plaintext(plaintext, memory_id, wrap.epoch, member_id)
    finally:
        crypto.wipe(plaintext)
    if not _eq(key_commitment(memory_id, record.epoch, key), bytes(record.key_commitment)):
        crypto.wipe(key)
        raise _CommitmentMismatch("decrypt_failed", f"key copy of epoch {wrap.epoch} does not match the epoch's commitment")
    return EpochKey(record, key)


# --- segment writes (§18.7) ----------------------------------------------------------------------------


def seal_write(
    writer_id: str,
    signing_key: SigningKey,
    memory_id: str,
    epoch: EpochKey,
    *,
    segment_id: str,
    previous_version: int,
    data: bytes,
    expires_at_ms: int,
    now_ms: int,
    nonce: bytes | None = None,
) -> tuple[Any, bytes]:
    """Encrypts ``data`` under the epoch key (a fresh random nonce) and signs the write record: ``(record, ciphertext)``."""
    if len(data) > MAX_SEGMENT_PLAINTEXT_BYTES:
        raise fail("too_large", f"segment data is {len(data)} bytes, more than {MAX_SEGMENT_PLAINTEXT_BYTES}")
    version = previous_version + 1
    ciphertext = crypto.xaead_seal(epoch.key, data, segment_ad(memory_id, segment_id, version, epoch.epoch, writer_id), nonce=nonce)
    record = memory_pb2.WriteRecord(
        segment_id=segment_id,
        version=version,
        previous_version=previous_version,
        key_epoch=epoch.epoch,
        ciphertext_digest=crypto.blake3(ciphertext),
        ciphertext_bytes=len(ciphertext),
        writer_id=writer_id,
        timestamp_ms=now_ms,
        expires_at_ms=expires_at_ms,
    )
    record.signature = signing_key.sign(write_layout(memory_id, record))
    return record, ciphertext


def open_write(memory_id: str, epoch: EpochKey, record: Any, ciphertext: bytes) -> bytes:
    """Decrypts a segment version whose record was verified: checks the ciphertext against the signed
    digest and length, then opens it under its epoch key.

    Raises ``bad_signature`` (not the ciphertext the writer signed), ``decrypt_failed``.
    """
    if len(ciphertext) != record.ciphertext_bytes or not _eq(crypto.blake3(ciphertext), bytes(record.ciphertext_digest)):
        raise fail("bad_signature", f"ciphertext of {record.segment_id} v{record.version} is not the one its writer signed")
    if epoch.epoch != record.key_epoch:
        raise fail("internal", "wrong epoch key")
    try:
        return crypto.xaead_open(epoch.key, ciphertext, segment_ad(memory_id, record.segment_id, record.version, record.key_epoch, record.writer_id))
    except CryptoError as error:
        raise fail("decrypt_failed", f"{record.segment_id} v{record.version} does not open under epoch {record.key_epoch}") from error
