"""The identity-bound handshake (docs/PROTOCOL.md §5): Noise XX carried in HandshakeFrames::

    step 1  initiator → responder   -> e                  payload: empty
    step 2  responder → initiator   <- e, ee, s, es       payload: HandshakePayload of the responder
    step 3  initiator → responder   -> s, se              payload: HandshakePayload of the initiator

The prologue (§5.2) binds the version, session id, both agent ids and the rekey
threshold, so a relay that rewrites a routing field breaks the handshake. The
payloads of steps 2 and 3 carry the sender's certificate and an Ed25519
signature over its Noise static key (§5.3); a :class:`~parley.session.Session`
exists only after the peer's certificate, validity, revocation status and
binding have all been checked. Any failure poisons the handshake (§5.4).

A fresh Noise static key is generated per handshake (§5.3 SHOULD).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.message import DecodeError

from . import crypto
from .errors import IdentityError, ParleyError, SessionError
from .identity import RevocationChecker, TrustBundle, VerifiedCertificate, is_agent_id, verify_certificate
from .key_schedule import DEFAULT_REKEY_THRESHOLD, MAX_REKEY_THRESHOLD, DirectionKeys, assert_rekey_threshold
from .layout import Layout
from .noise import MAX_MESSAGE_BYTES, PARLEY_NOISE_PROTOCOL, HandshakeResult, HandshakeState, parse_protocol_name
from .replay import MessageHashCache
from .session import DEFAULT_SKEW, LocalIdentity, Session, SkewLimits, now_ms
from .v1 import handshake_pb2

HandshakeFrame = handshake_pb2.HandshakeFrame
HandshakePayload = handshake_pb2.HandshakePayload

PROTOCOL_VERSION: Final = 1
SESSION_ID_BYTES: Final = 16
MAX_HANDSHAKE_PAYLOAD_BYTES: Final = 8192
ROLE_INITIATOR: Final = 1
ROLE_RESPONDER: Final = 2
_PROTOCOL: Final = parse_protocol_name(PARLEY_NOISE_PROTOCOL)


@dataclass(slots=True)
class HandshakeConfig:
    """What both roles need: this agent, the pinned issuers, optional revocation data, limits."""

    identity: LocalIdentity
    trust_bundle: TrustBundle
    revocations: RevocationChecker | None = None
    rekey_threshold: int = DEFAULT_REKEY_THRESHOLD
    skew: SkewLimits = DEFAULT_SKEW
    cache: MessageHashCache = field(default_factory=MessageHashCache)
    clock: Callable[[], int] = now_ms


def noise_prologue(session_id: bytes, initiator_id: str, responder_id: str, rekey_threshold: int) -> bytes:
    """§5.2."""
    return (
        Layout("parley/v1/noise-prologue")
        .u32(PROTOCOL_VERSION)
        .fixed(session_id, SESSION_ID_BYTES, "session_id")
        .str(initiator_id)
        .str(responder_id)
        .u32(rekey_threshold)
        .bytes()
    )


def identity_binding(session_id: bytes, agent_id: str, role: int, noise_static_key: bytes) -> bytes:
    """§5.3: what an agent's identity key signs to bind its Noise static key."""
    return (
        Layout("parley/v1/identity-binding")
        .fixed(session_id, SESSION_ID_BYTES, "session_id")
        .str(agent_id)
        .u8(role)
        .fixed(noise_static_key, 32, "noise static key")
        .bytes()
    )


def handshake_frame_digest(frame: Any) -> bytes:
    """§10.4: the item digest of a handshake frame."""
    return crypto.blake3(
        Layout("parley/v1/handshake-frame")
        .u32(frame.version)
        .fixed(frame.session_id, SESSION_ID_BYTES, "session_id")
        .str(frame.sender_id)
        .str(frame.recipient_id)
        .u32(frame.step)
        .var(frame.noise_message, "noise_message")
        .u32(frame.rekey_threshold)
        .bytes()
    )


def assert_frame_shape(frame: Any, step: int) -> None:
    """§5.1 structural checks before any cryptography, in order."""
    if frame.version != PROTOCOL_VERSION:
        raise SessionError("unsupported_version", f"handshake version {frame.version} is not supported")
    if len(frame.session_id) != SESSION_ID_BYTES:
        raise SessionError("malformed", "session_id must be 16 bytes")
    if not is_agent_id(frame.sender_id) or not is_agent_id(frame.recipient_id):
        raise SessionError("malformed", "frame agent ids are not valid")
    if frame.sender_id == frame.recipient_id:
        raise SessionError("malformed", "frame sender and recipient are the same agent")
    if frame.step not in (1, 2, 3):
        raise SessionError("malformed", "handshake step outside 1..3")
    if frame.step != step:  # a defined step at the wrong time: a wrong turn
        raise SessionError("handshake_failed", f"expected handshake step {step}, got {frame.step}")
    if not 32 <= len(frame.noise_message) <= MAX_MESSAGE_BYTES:
        raise SessionError("malformed", "noise_message length out of range")
    if not 1 <= frame.rekey_threshold <= MAX_REKEY_THRESHOLD:
        raise SessionError("malformed", "rekey_threshold out of range")


def _own_payload(identity: LocalIdentity, session_id: bytes, role: int, static_public: bytes) -> bytes:
    signature = identity.signing_key.sign(identity_binding(session_id, identity.agent_id, role, static_public))
    payload = HandshakePayload(identity_signature=signature)
    payload.certificate.CopyFrom(identity.certificate)
    data: bytes = payload.SerializeToString()
    return data


def _verify_peer_payload(config: HandshakeConfig, data: bytes, session_id: bytes, peer_id: str, role: int, remote_static: bytes) -> tuple[VerifiedCertificate, Any]:
    """§5.3: the peer's certificate (§3.3 with the expected id), then the binding over ``rs``."""
    if not 1 <= len(data) <= MAX_HANDSHAKE_PAYLOAD_BYTES:
        raise SessionError("malformed", "handshake payload size out of range")
    try:
        payload = HandshakePayload.FromString(data)
    except DecodeError as error:
        raise SessionError("malformed", "handshake payload does not decode") from error
    if not payload.HasField("certificate"):
        raise SessionError("malformed", "handshake payload has no certificate")
    if len(payload.identity_signature) != 64:
        raise SessionError("malformed", "identity signature must be 64 bytes")
    verified = verify_certificate(payload.certificate, config.trust_bundle, config.clock(), expected_agent_id=peer_id, revocations=config.revocations)
    binding = identity_binding(session_id, verified.agent_id, role, remote_static)
    if not crypto.ed25519_verify(bytes(payload.identity_signature), binding, verified.identity_public_key):
        raise SessionError("bad_binding", "identity signature does not bind this Noise static key")
    return verified, payload.certificate


def _frame(session_id: bytes, sender: str, recipient: str, step: int, message: bytes, threshold: int) -> Any:
    return HandshakeFrame(version=PROTOCOL_VERSION, session_id=session_id, sender_id=sender, recipient_id=recipient, step=step, noise_message=message, rekey_threshold=threshold)


def _session(config: HandshakeConfig, role: str, session_id: bytes, threshold: int, result: HandshakeResult, peer: tuple[VerifiedCertificate, Any]) -> Session:
    return Session(
        session_id=session_id,
        role=role,
        local=config.identity,
        peer=peer[0],
        peer_certificate=peer[1],
        # §8.1 step 2: the bundle itself, not its issuer's not_after_ms now: a live bundle (one that follows
        # the registry's, §15.9) is read at every open, so a retired or dropped issuer is noticed there.
        trust_bundle=config.trust_bundle,
        handshake_hash=result.handshake_hash,
        send=DirectionKeys(result.send, threshold),
        receive=DirectionKeys(result.receive, threshold),
        created_at_ms=config.clock(),
        cache=config.cache,
        skew=config.skew,
        revocations=config.revocations,
        clock=config.clock,
    )


def _as_session_error(error: BaseException) -> ParleyError:
    if isinstance(error, (SessionError, IdentityError)):
        return error
    if isinstance(error, ParleyError):
        return SessionError(error.code, error.detail)
    return SessionError("handshake_failed", "handshake rejected")


class _Pending:
    """What both roles share between their first and last frame."""

    def __init__(self, config: HandshakeConfig, hs: HandshakeState, session_id: bytes, peer_id: str, threshold: int) -> None:
        self.config = config
        self.hs = hs
        self.session_id = session_id
        self.peer_id = peer_id
        self.rekey_threshold = threshold
        self.started_at_ms = config.clock()
        self._done = False

    def abort(self) -> None:
        """Abandons the handshake, wiping its keys."""
        self._done = True
        self.hs.destroy()

    def _begin(self) -> None:
        if self._done:
            raise SessionError("handshake_failed", "handshake already finished")
        self._done = True

    def _check_routing(self, frame: Any) -> None:
        # §5.1 routing, in order: the session id names this handshake, then the agents, then the threshold.
        if not crypto.constant_time_equal(frame.session_id, self.session_id):
            raise SessionError("unknown_session", "frame for another session")
        if frame.sender_id != self.peer_id or frame.recipient_id != self.config.identity.agent_id:
            raise SessionError("identity_mismatch", "frame routing does not match the handshake")
        if frame.rekey_threshold != self.rekey_threshold:
            raise SessionError("malformed", "rekey threshold changed mid-handshake")

    @property
    def id_hex(self) -> str:
        return self.session_id.hex()


class InitiatorHandshake(_Pending):
    """The initiator between sending step 1 and receiving step 2."""

    @classmethod
    def start(
        cls,
        config: HandshakeConfig,
        peer_id: str,
        *,
        session_id: bytes | None = None,
        static_private: bytes | None = None,
        fixed_ephemeral_for_testing_only: bytes | None = None,
    ) -> tuple[InitiatorHandshake, Any]:
        """Starts a handshake with ``peer_id``: the handshake and frame 1 (``malformed`` for a bad peer id or threshold)."""
        me = config.identity.agent_id
        if not is_agent_id(peer_id) or peer_id == me:
            raise SessionError("malformed", "peer id is not a valid agent id")
        threshold = assert_rekey_threshold(config.rekey_threshold)
        sid = crypto.random_bytes(SESSION_ID_BYTES) if session_id is None else bytes(session_id)
        if len(sid) != SESSION_ID_BYTES:
            raise SessionError("malformed", "session id must be 16 bytes")
        hs = HandshakeState(
            _PROTOCOL,
            initiator=True,
            prologue=noise_prologue(sid, me, peer_id, threshold),
            static_private=static_private if static_private is not None else crypto.random_bytes(32),
            fixed_ephemeral_for_testing_only=fixed_ephemeral_for_testing_only,
        )
        handshake = cls(config, hs, sid, peer_id, threshold)
        message, _ = hs.write_message(b"")  # -> e
        return handshake, _frame(sid, me, peer_id, 1, message, threshold)

    def receive(self, frame2: Any) -> tuple[Any, Session]:
        """Processes frame 2: frame 3 to send and the established Session (the handshake is then spent)."""
        try:
            self._begin()
            assert_frame_shape(frame2, 2)
            self._check_routing(frame2)
            payload, _ = self.hs.read_message(bytes(frame2.noise_message))  # <- e, ee, s, es
            remote_static = self.hs.remote_static_key
            if remote_static is None:
                raise SessionError("handshake_failed", "no remote static key")
            peer = _verify_peer_payload(self.config, payload, self.session_id, self.peer_id, ROLE_RESPONDER, remote_static)
            own = _own_payload(self.config.identity, self.session_id, ROLE_INITIATOR, self.hs.static_public_key)
            message, result = self.hs.write_message(own)  # -> s, se
            if result is None:
                raise SessionError("handshake_failed", "handshake did not complete")
            session = _session(self.config, "initiator", self.session_id, self.rekey_threshold, result, peer)
            me = self.config.identity.agent_id
            return _frame(self.session_id, me, self.peer_id, 3, message, self.rekey_threshold), session
        except BaseException as error:
            self.hs.destroy()
            raise _as_session_error(error) from error


class ResponderHandshake(_Pending):
    """The responder between sending step 2 and receiving step 3."""

    @classmethod
    def accept(
        cls,
        config: HandshakeConfig,
        frame1: Any,
        *,
        static_private: bytes | None = None,
        fixed_ephemeral_for_testing_only: bytes | None = None,
    ) -> tuple[ResponderHandshake, Any]:
        """Answers frame 1: the handshake and frame 2. Any sender is accepted (§5.1); its certificate is checked at step 3."""
        try:
            assert_frame_shape(frame1, 1)
            me = config.identity.agent_id
            if frame1.recipient_id != me:
                raise SessionError("identity_mismatch", "handshake addressed to another agent")
            threshold = assert_rekey_threshold(frame1.rekey_threshold)
            sid = bytes(frame1.session_id)
            hs = HandshakeState(
                _PROTOCOL,
                initiator=False,
                prologue=noise_prologue(sid, frame1.sender_id, me, threshold),
                static_private=static_private if static_private is not None else crypto.random_bytes(32),
                fixed_ephemeral_for_testing_only=fixed_ephemeral_for_testing_only,
            )
            handshake = cls(config, hs, sid, frame1.sender_id, threshold)
            payload, _ = hs.read_message(bytes(frame1.noise_message))  # -> e
            if payload:
                hs.destroy()
                raise SessionError("malformed", "handshake message 1 must carry no payload")
            own = _own_payload(config.identity, sid, ROLE_RESPONDER, hs.static_public_key)
            message, _ = hs.write_message(own)  # <- e, ee, s, es
            return handshake, _frame(sid, me, frame1.sender_id, 2, message, threshold)
        except BaseException as error:
            raise _as_session_error(error) from error

    def receive(self, frame3: Any) -> Session:
        """Processes frame 3: the established Session."""
        result: HandshakeResult | None = None
        try:
            self._begin()
            assert_frame_shape(frame3, 3)
            self._check_routing(frame3)
            payload, result = self.hs.read_message(bytes(frame3.noise_message))  # -> s, se
            if result is None:
                raise SessionError("handshake_failed", "handshake did not complete")
            peer = _verify_peer_payload(self.config, payload, self.session_id, self.peer_id, ROLE_INITIATOR, result.remote_static)
            return _session(self.config, "responder", self.session_id, self.rekey_threshold, result, peer)
        except BaseException as error:
            # The peer failed a check after Noise completed: its transport keys must not outlive this.
            if result is not None:
                result.send.wipe()
                result.receive.wipe()
            self.hs.destroy()
            raise _as_session_error(error) from error
