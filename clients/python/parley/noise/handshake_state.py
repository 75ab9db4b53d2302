"""Noise HandshakeState (revision 34, §5.3) for the one-way-at-a-time patterns of §7.

The pattern is data (``protocol.pattern``); :meth:`HandshakeState.write_message`
and :meth:`HandshakeState.read_message` walk its tokens. When the last message
is written or read, both return a :class:`HandshakeResult` with the two
transport CipherStates of ``Split()`` (§5.2), oriented for this side: ``send``
is the initiator's first CipherState on the initiator and the second on the
responder.

Failure poisons: any error while reading or writing (a bad length, a failed
decryption, an all-zero DH output, a wrong turn) wipes every key the state
holds, and every later call fails with ``handshake_failed``. There is no
rollback: a peer that sent a bad message starts a new handshake
(docs/PROTOCOL.md §5.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import crypto
from ..errors import ParleyError, SessionError
from .cipher_state import CipherState
from .protocol import MAX_MESSAGE_BYTES, NoiseProtocol
from .symmetric_state import SymmetricState


@dataclass(slots=True)
class HandshakeResult:
    """The transport phase: the two CipherStates, the handshake hash and the peer's static key."""

    send: CipherState
    receive: CipherState
    handshake_hash: bytes
    remote_static: bytes

    def __repr__(self) -> str:
        return f"HandshakeResult(handshake_hash={self.handshake_hash.hex()[:16]}…)"


class HandshakeState:
    """One side of a handshake. ``repr`` shows no key."""

    __slots__ = ("_protocol", "_initiator", "_ss", "_s", "_s_pub", "_e", "_e_pub", "_rs", "_re", "_index", "_poisoned", "_done", "_fixed_e")

    def __init__(
        self,
        protocol: NoiseProtocol,
        *,
        initiator: bool,
        prologue: bytes,
        static_private: bytes | bytearray,
        fixed_ephemeral_for_testing_only: bytes | None = None,
    ) -> None:
        self._protocol = protocol
        self._initiator = initiator
        self._ss = SymmetricState(protocol)  # InitializeSymmetric(protocol_name)
        self._ss.mix_hash(bytes(prologue))  # MixHash(prologue); XX has no pre-messages
        self._s, self._s_pub = crypto.x25519_keypair(bytes(static_private))
        self._e: bytearray | None = None
        self._e_pub: bytes | None = None
        self._rs: bytes | None = None
        self._re: bytes | None = None
        self._index = 0
        self._poisoned = False
        self._done = False
        self._fixed_e = fixed_ephemeral_for_testing_only

    @property
    def static_public_key(self) -> bytes:
        return self._s_pub

    @property
    def remote_static_key(self) -> bytes | None:
        """``rs``, once a message carrying it was read and authenticated."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        return self._ss.get_handshake_hash()

    def _turn(self, writing: bool) -> tuple[str, ...]:
        if self._poisoned:
            raise SessionError("handshake_failed", "the handshake failed before and is unusable")
        if self._done or self._index >= len(self._protocol.pattern):
            raise SessionError("handshake_failed", "the handshake is already complete")
        initiators_turn = self._index % 2 == 0
        if writing != (initiators_turn == self._initiator):
            raise SessionError("handshake_failed", "not this side's turn")
        return self._protocol.pattern[self._index]

    def _dh(self, token: str) -> bytes:
        # §5.3: ee = DH(e, re); es = DH(e, rs) initiator / DH(s, re) responder;
        #       se = DH(s, re) initiator / DH(e, rs) responder; ss = DH(s, rs).
        e, s, re, rs = self._e, self._s, self._re, self._rs
        if token == "ee":
            pair = (e, re)
        elif token == "es":
            pair = (e, rs) if self._initiator else (s, re)
        elif token == "se":
            pair = (s, re) if self._initiator else (e, rs)
        elif token == "ss":
            pair = (s, rs)
        else:
            raise SessionError("handshake_failed", f"unknown token {token}")
        private, public = pair
        if private is None or public is None:
            raise SessionError("handshake_failed", f"{token} before its keys are known")
        return crypto.x25519(private, public)

    def _finish(self) -> HandshakeResult | None:
        self._index += 1
        if self._index < len(self._protocol.pattern):
            return None
        self._done = True
        c1, c2 = self._ss.split()
        h = self._ss.get_handshake_hash()
        rs = self._rs
        self._destroy_handshake_keys()
        if rs is None:
            raise SessionError("handshake_failed", "no remote static key")
        return HandshakeResult(send=c1 if self._initiator else c2, receive=c2 if self._initiator else c1, handshake_hash=h, remote_static=rs)

    def write_message(self, payload: bytes) -> tuple[bytes, HandshakeResult | None]:
        """WriteMessage(payload): the message bytes, and the result when this was the last message."""
        tokens = self._turn(writing=True)
        try:
            out = bytearray()
            for token in tokens:
                if token == "e":
                    if self._e is not None:
                        raise SessionError("handshake_failed", "e written twice")
                    self._e, self._e_pub = crypto.x25519_keypair(self._fixed_e)
                    out += self._e_pub
                    self._ss.mix_hash(self._e_pub)
                elif token == "s":
                    out += self._ss.encrypt_and_hash(self._s_pub)
                else:
                    self._ss.mix_key(self._dh(token))
            out += self._ss.encrypt_and_hash(bytes(payload))
            if len(out) > MAX_MESSAGE_BYTES:
                raise SessionError("handshake_failed", "Noise message longer than 65535 bytes")
            return bytes(out), self._finish()
        except ParleyError as error:
            self._poison()
            raise SessionError("handshake_failed", error.detail) from error
        except Exception as error:
            self._poison()
            raise SessionError("handshake_failed", "handshake write failed") from error

    def read_message(self, message: bytes) -> tuple[bytes, HandshakeResult | None]:
        """ReadMessage(message): the payload, and the result when this was the last message."""
        tokens = self._turn(writing=False)
        try:
            if len(message) > MAX_MESSAGE_BYTES:
                raise SessionError("handshake_failed", "Noise message longer than 65535 bytes")
            rest = memoryview(bytes(message))
            dhlen = self._protocol.dhlen
            for token in tokens:
                if token == "e":
                    if len(rest) < dhlen:
                        raise SessionError("handshake_failed", "message too short for e")
                    self._re = bytes(rest[:dhlen])
                    rest = rest[dhlen:]
                    self._ss.mix_hash(self._re)
                elif token == "s":
                    n = dhlen + (16 if self._ss.has_key() else 0)
                    if len(rest) < n:
                        raise SessionError("handshake_failed", "message too short for s")
                    self._rs = self._ss.decrypt_and_hash(bytes(rest[:n]))
                    rest = rest[n:]
                else:
                    self._ss.mix_key(self._dh(token))
            payload = self._ss.decrypt_and_hash(bytes(rest))
            return payload, self._finish()
        except ParleyError as error:
            self._poison()
            raise SessionError("handshake_failed", error.detail) from error
        except Exception as error:
            self._poison()
            raise SessionError("handshake_failed", "handshake read failed") from error

    def _destroy_handshake_keys(self) -> None:
        self._ss.destroy()
        crypto.wipe(self._s)
        if self._e is not None:
            crypto.wipe(self._e)

    def _poison(self) -> None:
        self._poisoned = True
        self._destroy_handshake_keys()

    def destroy(self) -> None:
        """Abandons the handshake, wiping its keys; later calls fail."""
        self._poison()

    def __repr__(self) -> str:
        state = "poisoned" if self._poisoned else "done" if self._done else f"message {self._index + 1}"
        return f"HandshakeState({self._protocol.name}, {'initiator' if self._initiator else 'responder'}, {state})"
