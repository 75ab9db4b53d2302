"""Errors: one base class, :class:`ParleyError`, carrying one of the protocol's stable codes.

The codes are the closed set of docs/PROTOCOL.md §11 (message, handshake and
certificate rejections) and §15.8 (API codes), the go-away codes of §10.2/§10.7,
``state_error`` of the delivery contract (§17) and the shared-memory codes of §18.11
(``conflict``, ``quota_exceeded``, ``rotation_required``). Callers switch on
``error.code``, never on the message; the message starts with the code
(``[revoked] …``) and the original exception, if any, is ``__cause__``.

Subclasses say which layer raised it, so ``except parley.GatewayError`` is
possible, but every subclass uses the same code set:

- :class:`IdentityError`  certificates, trust bundles, key files, revocation data
- :class:`SessionError`   handshakes and envelopes (§5, §8)
- :class:`GatewayError`   a refusal or go-away from the gateway, or the stream (§10)
- :class:`DeliveryError`  the outcome of a send (no receipt in time, expired, …)
- :class:`StateError`     the local state directory (sealed files, counters)
- :class:`SharedMemoryError` shared memory (§18): the TypeScript SDK's ``MemoryError`` (renamed
  so as not to shadow Python's built-in ``MemoryError``); a lost compare-and-set is ``conflict``
  with ``current_version`` (and the verified ``current`` write record)

A peer is never told why its handshake or message failed: the detail stays in
the local message and the security event, and only ``unknown_session`` is ever
answered on the wire (a SessionReject).
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

ErrorCode = Literal[
    # §11: message, handshake and certificate rejections
    "malformed",  # structure, length, encoding or range of a field is wrong
    "unsupported_version",  # a version this implementation does not speak
    "unknown_session",  # no live session with that id
    "bad_signature",  # a signature does not verify
    "bad_tag",  # the HMAC-SHA256 auth tag does not verify
    "decrypt_failed",  # AEAD or Noise decryption failed
    "bad_commitment",  # decrypted payload does not match its signed commitment
    "replay",  # counter seen or left of the window, message hash seen, epoch key discarded
    "stale_timestamp",  # older than max_age
    "future_timestamp",  # further ahead than max_future
    "revoked",  # certificate revoked by agent id or serial
    "revocation_stale",  # revocation data older than its freshness bound (fail closed)
    "expired",  # outside the certificate's (or issuer's) validity; or a send past its validity
    "not_yet_valid",  # certificate not valid yet
    "unknown_issuer",  # issuer key not in the trust bundle
    "bad_certificate",  # issuer signature over the certificate does not verify
    "identity_mismatch",  # certificate, frame or envelope names another agent than expected
    "bad_binding",  # handshake identity signature does not cover the Noise static key
    "handshake_failed",  # handshake out of order, poisoned, or timed out
    "nonce_exhausted",  # counter at its limit; renew the session
    "too_large",  # size limit exceeded
    "policy_denied",  # refused by gateway policy
    "rate_limited",  # refused by a rate limit or a full local queue
    "state_corrupt",  # sealed local state does not open or parse
    # §15.8: API codes
    "not_found",
    "already_exists",
    "unauthenticated",
    "permission_denied",
    "challenge_invalid",
    "failed_precondition",
    "unavailable",  # no gateway connection right now (transient)
    "deadline_exceeded",  # the caller's own timeout: not confirmed yet (the outbox keeps trying)
    "cancelled",  # the agent was closed while the operation was pending
    "unimplemented",
    "internal",
    # §10.2/§10.7 go-away codes that are not §11 codes
    "replaced",  # another stream authenticated as this agent
    "shutting_down",  # the gateway is stopping (transient: reconnect)
    # §17 (delivery contract)
    "state_error",  # the state directory could not be written: nothing was sealed or accepted
    # §18.11 (shared memory)
    "conflict",  # a write's compare-and-set lost, or a membership/epoch change raced another (reload and retry)
    "quota_exceeded",  # a memory's or owner's byte, segment or member quota refuses the change
    "rotation_required",  # a holder of the current epoch key is gone: start the next epoch first
    # §15.9, §15.11: trust bundle and enrolment
    "rollback",  # a trust bundle document older than (or different at) the version already held
    "join_token_invalid",  # join token unknown, wrong secret, revoked, or for another agent id
    "join_token_used",  # join token already used
    "join_token_expired",  # join token past its expiry
]

ERROR_CODES: Final[frozenset[str]] = frozenset(get_args(ErrorCode))


def is_error_code(value: object) -> bool:
    """Whether ``value`` is one of the stable codes of :data:`ErrorCode`."""
    return isinstance(value, str) and value in ERROR_CODES


class ParleyError(Exception):
    """The base of every error the SDK raises. ``code`` is a stable :data:`ErrorCode`.

    ``held_send_id`` is set on what a ``send()`` raises when :meth:`Agent.close` or a stop for good ended its wait
    after its first record was written in a state directory: the message is held there (not lost), a restart with
    the same state resumes it and reports its outcome as the ``send_settled`` event of that id (``send(…, id=…)``
    with it after the restart joins it). None everywhere else — for such a ``cancelled`` (or stopping error) too:
    then nothing of the send was kept (no state directory)."""

    code: ErrorCode
    detail: str
    held_send_id: str | None = None

    def __init__(self, code: ErrorCode, detail: str) -> None:
        if code not in ERROR_CODES:  # a programming error inside the SDK, never input
            raise ValueError(f"unknown Parley error code {code!r}")
        super().__init__(f"[{code}] {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[object, ...]:  # picklable with its code
        return (type(self), (self.code, self.detail))


class IdentityError(ParleyError):
    """Certificates, trust bundles, key files and revocation data (§3, §15)."""


class SessionError(ParleyError):
    """Handshakes (§5) and envelopes (§6–§8)."""


class GatewayError(ParleyError):
    """A refusal (``rejected``) or go-away from the gateway, or a failed stream (§10)."""


class DeliveryError(ParleyError):
    """The outcome of a send that did not end with a verified receipt (§17)."""


class StateError(ParleyError):
    """The local state directory (§17): ``state_error`` or ``state_corrupt``."""


class SharedMemoryError(ParleyError):
    """Shared memory (§18). ``code`` as everywhere; for a segment's lost compare-and-set (``conflict``),
    ``current_version`` is the segment's version now (0: it does not exist) and ``current`` its verified
    write record (a ``parley.v1.WriteRecord``) when it exists; both are None otherwise."""

    current_version: int | None
    current: Any | None

    def __init__(self, code: ErrorCode, detail: str, *, current_version: int | None = None, current: Any | None = None) -> None:
        super().__init__(code, detail)
        self.current_version = current_version
        self.current = current

    def __reduce__(self) -> tuple[object, ...]:
        return (_shared_memory_error, (self.code, self.detail, self.current_version))


def _shared_memory_error(code: ErrorCode, detail: str, current_version: int | None) -> SharedMemoryError:
    return SharedMemoryError(code, detail, current_version=current_version)


def code_of(error: BaseException) -> ErrorCode:
    """The stable code of any exception: its own for a :class:`ParleyError`, else ``internal``."""
    return error.code if isinstance(error, ParleyError) else "internal"
