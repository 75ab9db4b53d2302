"""An established session: seals and opens SecureMessages (docs/PROTOCOL.md §6–§8).

Created only by a completed, identity-checked handshake (:mod:`parley.handshake`)
or restored from sealed local state. The receive path runs the checks of §8.1 in
order — shape, session, routing and the peer's standing, signature, timestamp
skew, replay window, message-hash cache, epoch key, HMAC tag, AEAD, commitment
and payload — and changes nothing until all have passed.

Opening is two-phase: :meth:`Session.open` returns an :class:`Opened` whose
:meth:`Opened.commit` marks the counter, the hash and the epoch keys. The agent
writes the durable inbox record (§17) between the two, so a crash can never
leave a counter marked whose message was not recorded.

The peer's standing (§8.1 step 2, §8.4): before the signature, on the agent's
own data only, the peer's certificate is checked again against the agent's
trust bundle as it is now (a :class:`~parley.trust_bundle.RegistryTrustBundle`
follows the registry's): its issuer still in it (``unknown_issuer``), its
validity and the issuer's ``not_after_ms`` read from it at that moment, never a
copy taken at the handshake (``expired``), its revocation status when the
session has a checker (``revoked``, ``revocation_stale``). ``unknown_issuer``,
``expired`` and ``revoked`` close the session (:data:`CLOSING_CODES`); a
restored session is given the same bundle and checked the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from . import crypto
from .envelope import (
    MAX_COUNTER,
    PROTOCOL_VERSION,
    SALT_BYTES,
    SecureMessage,
    assert_envelope_shape,
    decode_payload,
    envelope_ad,
    envelope_mac_input,
    envelope_signed_bytes,
    from_value,
    payload_commitment,
)
from .errors import IdentityError, ParleyError, SessionError
from .identity import RevocationChecker, TrustBundle, VerifiedCertificate, check_revocation
from .key_schedule import DirectionKeys, EpochKeys
from .replay import MessageHashCache, ReplayWindow


@dataclass(frozen=True, slots=True)
class SkewLimits:
    """§8.3 timestamp bounds: ``max_age_ms`` (default 1 h, must cover mailbox delivery) and ``max_future_ms`` (60 s)."""

    max_age_ms: int = 3_600_000
    max_future_ms: int = 60_000


DEFAULT_SKEW: Final = SkewLimits()

#: §8.4: the peer-standing codes that close the session (``revocation_stale`` refuses the message only).
CLOSING_CODES: Final = frozenset({"unknown_issuer", "expired", "revoked"})


@dataclass(slots=True)
class LocalIdentity:
    """This agent: id, Ed25519 signing key and encoded certificate (and its decoded form)."""

    agent_id: str
    signing_key: crypto.SigningKey
    certificate: Any  # parley.v1.identity_pb2.AgentCertificate

    def __repr__(self) -> str:
        return f"LocalIdentity({self.agent_id})"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Sealed:
    """A sealed envelope, its message hash and the sender's own opening (payload, salt)."""

    envelope: Any
    message_hash: bytes
    payload: bytes
    salt: bytes
    counter: int
    send_epoch_moved: bool


@dataclass(slots=True)
class Opened:
    """An envelope that passed every check, not yet committed to the session."""

    session: Session
    envelope: Any
    message_hash: bytes
    payload: Any  # MessagePayload
    payload_bytes: bytes
    salt: bytes
    counter: int
    _derived: list[EpochKeys] = field(default_factory=list)
    _done: bool = False

    @property
    def content(self) -> object:
        return from_value(self.payload.content)

    def commit(self) -> bool:
        """§8.1 step 11: marks the counter and hash, keeps and prunes epoch keys. True when the held epochs changed."""
        if self._done:
            return False
        self._done = True
        return self.session._commit(self)

    def discard(self) -> None:
        """Drops the opening without changing the session (wipes keys it derived)."""
        if not self._done:
            self._done = True
            DirectionKeys.discard(self._derived)


class Session:
    """One end of a session. ``repr`` shows ids and role, never keys."""

    def __init__(
        self,
        *,
        session_id: bytes,
        role: str,
        local: LocalIdentity,
        peer: VerifiedCertificate,
        peer_certificate: Any,
        trust_bundle: TrustBundle,
        handshake_hash: bytes,
        send: DirectionKeys,
        receive: DirectionKeys,
        created_at_ms: int,
        send_counter: int = 0,
        window: ReplayWindow | None = None,
        cache: MessageHashCache | None = None,
        skew: SkewLimits = DEFAULT_SKEW,
        revocations: RevocationChecker | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.id = bytes(session_id)
        self.role = role
        self.local = local
        self.peer = peer
        self.peer_certificate = peer_certificate
        self.handshake_hash = bytes(handshake_hash)
        self.created_at_ms = created_at_ms
        self.last_activity_ms = created_at_ms
        self._send = send
        self._receive = receive
        self._send_counter = send_counter
        self._window = window or ReplayWindow()
        self._cache = cache if cache is not None else MessageHashCache()
        self._skew = skew
        self._revocations = revocations
        if not isinstance(trust_bundle, TrustBundle):
            raise SessionError("malformed", "a session needs the trust bundle its peer is checked against")
        #: The agent's trust bundle (live when it follows the registry's): read at every check, never copied.
        self._trust_bundle = trust_bundle
        self._clock = clock
        self.closed = False
        self.sent = 0
        self.received = 0

    @property
    def peer_id(self) -> str:
        return self.peer.agent_id

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    @property
    def rekey_threshold(self) -> int:
        return self._send.threshold

    @property
    def send_counter(self) -> int:
        """The next counter this side will seal."""
        return self._send_counter

    @property
    def send_epoch(self) -> int:
        return self._send.newest_epoch

    @property
    def receive_epochs(self) -> list[int]:
        return self._receive.held_epochs()

    @property
    def window(self) -> ReplayWindow:
        return self._window

    # --- sending ---------------------------------------------------------------------------

    def allocate_counter(self) -> int:
        """Takes the next send counter (``nonce_exhausted`` at the §7 limit). The caller reserves it durably, then seals."""
        if self.closed:
            raise SessionError("unknown_session", "session is closed")
        counter = self._send_counter
        if counter > MAX_COUNTER:
            raise SessionError("nonce_exhausted", "send counter exhausted; renew the session")
        self._send_counter = counter + 1
        return counter

    def seal_at(self, counter: int, payload: bytes, timestamp_ms: int, *, salt: bytes | None = None) -> Sealed:
        """Seals an encoded MessagePayload (whose timestamp is ``timestamp_ms``) at ``counter`` (§6)."""
        if self.closed:
            raise SessionError("unknown_session", "session is closed")
        if counter >= self._send_counter or counter < 0:
            raise SessionError("malformed", "counter was not allocated")
        salt = crypto.random_bytes(SALT_BYTES) if salt is None else salt
        envelope = SecureMessage(
            version=PROTOCOL_VERSION,
            sender_id=self.local.agent_id,
            recipient_id=self.peer.agent_id,
            session_id=self.id,
            nonce=counter,
            timestamp_ms=timestamp_ms,
            payload_commitment=payload_commitment(salt, payload),
        )
        keys, moved = self._send.for_send(counter)
        plaintext = bytearray(salt + payload)
        envelope.encrypted_payload = keys.cipher.encrypt_at(counter, envelope_ad(envelope), bytes(plaintext))
        crypto.wipe(plaintext)
        envelope.auth_tag = crypto.hmac_sha256(keys.mac_key, envelope_mac_input(envelope))
        signed = envelope_signed_bytes(envelope)
        envelope.signature = self.local.signing_key.sign(signed)
        self.sent += 1
        self.last_activity_ms = self._clock()
        return Sealed(envelope, crypto.blake3(signed), payload, salt, counter, moved)

    # --- receiving -------------------------------------------------------------------------------

    def open(self, envelope: Any, now: int | None = None) -> Opened:
        """Runs every check of §8.1 (steps 1–10); raises SessionError/IdentityError with the first failing code."""
        now = self._clock() if now is None else now
        assert_envelope_shape(envelope)
        # 2. session and routing
        if self.closed:
            raise SessionError("unknown_session", "session is closed")
        if not crypto.constant_time_equal(envelope.session_id, self.id):
            raise SessionError("unknown_session", "session id does not match")
        if envelope.recipient_id != self.local.agent_id:
            raise SessionError("identity_mismatch", "envelope is addressed to another agent")
        if envelope.sender_id != self.peer.agent_id:
            raise SessionError("identity_mismatch", "envelope sender is not the session peer")
        #    then the peer's standing (§8.1 step 2, §8.4), on the agent's own data only: its issuer still in
        #    the trust bundle (`unknown_issuer`), still valid and its issuer not past not_after_ms (`expired`),
        #    not revoked (`revoked`), data fresh (`revocation_stale`). The first three close the session.
        self.check_peer(now)
        # 3. signature, with the peer's certified identity key
        signed = envelope_signed_bytes(envelope)
        if not crypto.ed25519_verify(bytes(envelope.signature), signed, self.peer.identity_public_key):
            raise SessionError("bad_signature", "envelope signature does not verify")
        # 4. timestamp skew
        ts = envelope.timestamp_ms
        if ts < now - self._skew.max_age_ms:
            raise SessionError("stale_timestamp", "timestamp older than the skew bound")
        if ts > now + self._skew.max_future_ms:
            raise SessionError("future_timestamp", "timestamp beyond the future skew bound")
        # 5. replay window, 6. message-hash cache
        counter = envelope.nonce
        verdict = self._window.check(counter)
        if verdict != "ok":
            raise SessionError("replay", f"nonce refused by the replay window ({verdict})")
        digest = crypto.blake3(signed)
        if digest in self._cache:
            raise SessionError("replay", "message hash seen before")
        # 7. epoch key
        keys, derived = self._receive.lookup(self._receive.epoch_of(counter))
        try:
            # 8. HMAC tag, 9. AEAD, 10. commitment and payload
            if not crypto.hmac_sha256_verify(keys.mac_key, envelope_mac_input(envelope), bytes(envelope.auth_tag)):
                raise SessionError("bad_tag", "auth tag does not verify")
            try:
                plaintext = bytearray(keys.cipher.decrypt_at(counter, envelope_ad(envelope), bytes(envelope.encrypted_payload)))
            except ParleyError as error:
                raise SessionError("decrypt_failed", "AEAD decryption failed") from error
            salt, payload_bytes = bytes(plaintext[:SALT_BYTES]), bytes(plaintext[SALT_BYTES:])
            crypto.wipe(plaintext)
            if not crypto.constant_time_equal(payload_commitment(salt, payload_bytes), bytes(envelope.payload_commitment)):
                raise SessionError("bad_commitment", "payload does not match its commitment")
            payload = decode_payload(payload_bytes, ts)
        except BaseException:
            DirectionKeys.discard(derived)
            raise
        return Opened(self, envelope, digest, payload, payload_bytes, salt, counter, derived)

    @property
    def peer_issuer_not_after_ms(self) -> int | None:
        """The ``not_after_ms`` of the peer certificate's issuer in the trust bundle now (None: no bound, or gone)."""
        issuer = self._trust_bundle.get(self.peer.issuer_key_id)
        return issuer.not_after_ms if issuer is not None else None

    def check_peer(self, now: int) -> None:
        """§8.1 step 2, §8.4: the peer's certificate still stands at ``now`` in the trust bundle as it is now.

        Its issuer is looked up in the bundle at every call (``unknown_issuer`` when it has left it), the
        certificate's validity and that issuer's ``not_after_ms`` are checked (``expired``), then revocation
        (``revoked``, ``revocation_stale``). ``unknown_issuer``, ``expired`` and ``revoked`` close the session
        (its keys wiped) before raising; ``revocation_stale`` refuses without closing (fresher data may clear
        the peer).
        """
        issuer = self._trust_bundle.get(self.peer.issuer_key_id)
        try:
            if issuer is None:
                raise IdentityError("unknown_issuer", "the issuer of the peer's certificate is no longer in the trust bundle; session closed")
            if now >= self.peer.valid_until_ms:
                raise IdentityError("expired", "the peer's certificate has expired; session closed")
            if issuer.not_after_ms is not None and now >= issuer.not_after_ms:
                raise IdentityError("expired", "the peer's certificate issuer is past its not_after_ms in the trust bundle; session closed")
            if self._revocations is not None:
                check_revocation(self._revocations, self.peer.agent_id, self.peer.serial, now)
        except IdentityError as error:
            if error.code in CLOSING_CODES:
                self.close()
            raise

    def _commit(self, opened: Opened) -> bool:
        if self.closed:
            DirectionKeys.discard(opened._derived)
            return False
        if not self._window.accept(opened.counter) or opened.message_hash in self._cache:
            DirectionKeys.discard(opened._derived)  # a concurrent open committed first
            raise SessionError("replay", "already accepted")
        self._cache.add(opened.message_hash)
        changed = self._receive.commit(opened._derived, self._receive.epoch_of(self._window.floor))
        self.received += 1
        self.last_activity_ms = self._clock()
        return changed

    def mark_accepted(self, counter: int, digest: bytes) -> None:
        """Replays a durable record into the window and cache after a restart (no keys involved)."""
        self._window.accept(counter)
        self._cache.add(digest)

    def prune_receive_keys(self) -> None:
        self._receive.prune(self._receive.epoch_of(self._window.floor))

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the session and wipes every key it holds. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._send.wipe()
        self._receive.wipe()

    def export_keys(self) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        """Send and receive epoch keys, for sealed local state only."""
        if self.closed:
            raise SessionError("unknown_session", "session is closed")
        return self._send.export(), self._receive.export()

    def __repr__(self) -> str:
        arrow = "->" if self.role == "initiator" else "<-"
        return f"Session({self.id_hex}, {self.local.agent_id} {arrow} {self.peer.agent_id}{', closed' if self.closed else ''})"


def is_revocation_error(error: BaseException) -> bool:
    return isinstance(error, IdentityError) and error.code in ("revoked", "revocation_stale")
