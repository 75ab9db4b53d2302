"""A first contact with an agent the gateway has never seen (docs/PROTOCOL.md §10.3 step 5, §5.4, §17.2 item 6).

The gateway routes by the certificates of the agents it has seen, and refuses a step 1 to any other id
``policy_denied`` (as it refuses a denied route). Lazily, so that the usual path costs nothing: only when a step 1
that carried no recipient certificate is refused ``policy_denied``, and only when the agent follows its registry (its
``trust_bundle`` is a :class:`parley.RegistryTrustBundle`, which holds a channel to it), the agent looks the recipient
up in the registry (``GetAgent``, signed as this agent, §15.3), verifies the certificate it gets against the trust
bundle (and the revocation data) it uses now — the agent id must be the recipient's —, and relays the SAME step 1
again (the same frame: a responder drops copies of a step 1 whose session it holds) with
``Outbound.recipient_certificate`` attached. The gateway verifies it again, applies its policy with it, stores the
step 1 for the offline recipient (``QUEUED``) and remembers the certificate; the handshake then waits as for any
offline recipient (§5.4), and its step 1 resends carry the same certificate.

What a failure means for the sends waiting on that handshake (as @parley/client's ``first-contact.ts``):

- refused ``policy_denied`` again with the certificate attached: the route is denied — ``policy_denied``;
- the registry has no such agent (``NOT_FOUND``), lists it revoked or expired, or refuses this agent's read
  (``permission_denied``, …): ``policy_denied`` (permanent), the message naming the cause;
- the certificate it returns does not verify: ``policy_denied`` saying so, and a ``security`` event with stage
  ``directory`` (an issuer the agent does not know yet first makes it refresh the followed trust bundle and check
  once more);
- the registry unreachable or unavailable, rate limiting, the certificate not valid yet or this agent's revocation
  data stale: transient (``unavailable``, …): the handshake is tried again on its backoff while the sends live,
  and they end ``expired`` if that never succeeds. Each such failed lookup is reported (``on_lookup_failed``: the
  agent's ``first_contact`` event, with ``peer``, ``code`` and ``detail``), so that a program can say why its sends
  to that peer are stuck;
- the handshake gave up while its recipient was looked up (the agent closed or stopped): ``cancelled`` — never the
  gateway's ``policy_denied``, which would end the sends waiting.

Without a registry-following trust bundle such a step 1 fails ``policy_denied`` at once. The gateway answers every refused
route alike, so the message cannot say which cause it was; it names them: the recipient unknown to the gateway (a first
contact needs a registry-following trust bundle to introduce it, or the recipient to connect to the gateway once),
revoked, or not allowed by the gateway's policy.

Bounded: one lookup in flight per peer (concurrent handshakes share it), at most :data:`MAX_LOOKUPS_IN_FLIGHT` at
once; verified certificates cached for :data:`CACHE_TTL_MS` for at most :data:`MAX_CACHED_PEERS` peers; certificates
bound to step 1 frames (for their resends) for at most as many handshakes. Nothing an outside party sends makes any of
them grow: a lookup starts only for a step 1 this agent sent and the gateway refused. Both are dropped only when the
gateway refuses the certificate itself (:data:`CERTIFICATE_REFUSALS`); a transient answer (a reconnect, a timeout, rate
limiting, the gateway's revocation data stale, …) keeps them, so the retries and resends it causes read no registry.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn

from .errors import ErrorCode, GatewayError, IdentityError, ParleyError, SessionError
from .identity import MAX_CERTIFICATE_BYTES, RevocationChecker, TrustBundle, verify_certificate
from .session import now_ms
from .v1 import registry_pb2

_log = logging.getLogger("parley")

#: Most peers whose verified registry certificate is kept.
MAX_CACHED_PEERS: Final = 256
#: How long a verified registry certificate is used without asking the registry again (never past its validity).
CACHE_TTL_MS: Final = 5 * 60_000
#: Most registry lookups in flight at once (under the registry's burst of 100 reads signed by one agent, §15.3).
MAX_LOOKUPS_IN_FLIGHT: Final = 64
#: How long one registry lookup of a recipient may take, seconds.
LOOKUP_TIMEOUT_S: Final = 5.0

#: Registry answers that asking again will not change: the lookup fails for good (``policy_denied``, with the cause).
#: (``failed_precondition``: the RegistryTrustBundle was never started.)
PERMANENT_LOOKUP_FAILURES: Final = frozenset({"not_found", "permission_denied", "unauthenticated", "unimplemented", "malformed", "failed_precondition"})
#: Certificate checks that time or fresher data can change: the lookup is tried again (the handshake's backoff).
TRANSIENT_CERTIFICATE_FAILURES: Final = frozenset({"not_yet_valid", "revocation_stale"})
#: The gateway's refusals of a ``recipient_certificate`` that speak of the certificate itself (as @parley/client's
#: ``CERTIFICATE_REFUSALS``: the gateway's checks of it, minus ``not_yet_valid`` and ``revocation_stale``, which time or
#: fresher data change): the certificate attached to that step 1, and the cached one, are dropped, so that the next
#: attempt asks the registry again (revoked or rotated meanwhile, …). Every other answer — transient (``unavailable``,
#: ``deadline_exceeded``, ``cancelled``, ``rate_limited``, ``quota_exceeded``, ``internal``, ``not_yet_valid``,
#: ``revocation_stale``, …) or about the frame or the route — keeps both.
CERTIFICATE_REFUSALS: Final = frozenset({"malformed", "unsupported_version", "unknown_issuer", "bad_certificate", "expired", "identity_mismatch", "revoked"})

#: ``GetAgent`` of one agent id, signed as this agent: the registry's ``AgentRecord``, or an error with its code.
GetAgent = Callable[[str], Awaitable[Any]]
#: Sends the step 1 with the recipient certificate given (None: none) and returns the gateway's ``Accepted``.
Send = Callable[[Any | None], Awaitable[Any]]


class FirstContact:
    """The recipient lookup of a first contact, its cache, and the certificates bound to step 1 frames."""

    def __init__(
        self,
        *,
        get_agent: GetAgent | None,
        trust_bundle: TrustBundle,
        revocations: RevocationChecker | None = None,
        refresh_trust_bundle: Callable[[], Awaitable[object]] | None = None,
        on_security: Callable[[str, str, str], None] | None = None,
        on_lookup_failed: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """``get_agent``: None without a registry (a step 1 refused ``policy_denied`` then fails at once).
        ``trust_bundle``: the one the agent verifies peers against (a live one: read at each check).
        ``refresh_trust_bundle``: fetches the registry's newest trust bundle (a certificate of an issuer not known yet).
        ``on_security(code, peer, detail)``: a certificate the registry returned does not verify.
        ``on_lookup_failed(peer, code, detail)``: a lookup failed in a way time can fix (``code``: the registry's, or the
        certificate check's — ``unavailable``, ``deadline_exceeded``, ``rate_limited``, ``revocation_stale``, …); once per
        failed lookup (the agent's ``first_contact`` event)."""
        self._get_agent = get_agent
        self._trust = trust_bundle
        self._revocations = revocations
        self._refresh = refresh_trust_bundle
        self._on_security = on_security
        self._on_lookup_failed = on_lookup_failed
        self._clock = clock
        #: Verified registry certificates by peer id, least recently used first: (certificate, until_ms).
        self._cache: collections.OrderedDict[str, tuple[Any, int]] = collections.OrderedDict()
        #: Lookups in flight by peer id.
        self._lookups: dict[str, asyncio.Task[Any]] = {}
        #: The certificate attached to a step 1, by its session id: its resends carry it too. Oldest first.
        self._attached: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        #: How many lookups were started (for tests and diagnostics).
        self.lookups_started = 0

    @property
    def enabled(self) -> bool:
        """Whether recipients can be looked up (the agent follows its registry)."""
        return self._get_agent is not None

    def attached(self, session_id: bytes) -> Any | None:
        """The certificate attached to the step 1 of ``session_id`` (its resends carry it), if one was."""
        return self._attached.get(session_id)

    def handshake_over(self, session_id: bytes) -> None:
        """The handshake of ``session_id`` ended (established or given up): its step 1 is never sent again."""
        self._attached.pop(session_id, None)

    async def relay(self, peer: str, session_id: bytes, send: Send, live: Callable[[], bool] = lambda: True) -> Any:
        """Relays this agent's step 1 to ``peer`` with ``send``. Refused ``policy_denied`` without a recipient
        certificate, it is relayed once more — the same frame — with the peer's verified registry certificate attached
        (then bound to ``session_id``: :meth:`attached`). ``live``: whether the handshake still waits for the frame
        (checked before it is relayed again).

        Raises:
            GatewayError: the gateway's refusal; ``policy_denied`` with the cause for a failed first contact.
            IdentityError: a lookup that may succeed later (``unavailable``, ``rate_limited``, ``revocation_stale``,
                ``not_yet_valid``, ``deadline_exceeded``): the handshake is tried again on its backoff.
            SessionError: ``cancelled``: the handshake gave up (``live`` turned false) while the peer was looked up.
        """
        attached = self._attached.get(session_id)
        try:
            return await send(attached)
        except GatewayError as error:
            refusal = error
        if refusal.code != "policy_denied":
            if attached is not None:
                self._refused_with(refusal, peer, session_id)
            raise refusal
        if attached is not None:
            raise _route_denied(peer, refusal)
        if self._get_agent is None:
            # The gateway answers every refused route alike (so that senders cannot probe which ids exist): the SDK
            # cannot tell why. Each possible cause is named, with what fixes the first one.
            raise GatewayError(
                "policy_denied",
                f"{refusal.detail} (the gateway refused the route to {peer!r}; it does not say why: {peer!r} may be unknown to the gateway — "
                f"a first contact with an agent it never saw needs a parley.RegistryTrustBundle as the agent's trust_bundle, so that "
                f"{peer!r}'s certificate can be looked up in the registry and attached, or {peer!r} must connect to the gateway once —, "
                f"revoked, or not allowed by the gateway's policy)",
            ) from refusal
        # Transient, never the refusal itself: a handshake that ended meanwhile ignores it, and one that did not must
        # not settle its sends policy_denied for it.
        over = f"the handshake with {peer!r} ended while its certificate was looked up: its step 1 is not relayed again"
        if not live():
            raise SessionError("cancelled", over)  # the handshake gave up already: nothing to look up for
        certificate = await self.certificate_of(peer, refusal)
        if not live():
            raise SessionError("cancelled", over)  # the handshake gave up meanwhile (closed): nothing to relay again
        self._bind(session_id, certificate)
        try:
            return await send(certificate)
        except GatewayError as again:
            if again.code == "policy_denied":
                raise _route_denied(peer, again) from again
            self._refused_with(again, peer, session_id)
            raise

    def _refused_with(self, refusal: ParleyError, peer: str, session_id: bytes) -> None:
        """A step 1 that carried the peer's certificate was refused ``refusal`` (not ``policy_denied``): the certificate
        is dropped (attached and cached) only when the gateway refused the certificate itself; on any other answer the
        next attempt (a handshake retry, a step 1 resend) carries it again, reading no registry."""
        if refusal.code in CERTIFICATE_REFUSALS:
            self._forget(peer, session_id)

    async def certificate_of(self, peer: str, refusal: ParleyError | None = None) -> Any:
        """The peer's verified registry certificate: cached (and still verifying now), or looked up — one lookup per
        peer at a time, shared by every caller. Raises as :meth:`relay` does."""
        now = self._clock()
        cached = self._cache.pop(peer, None)
        if cached is not None:
            certificate, until_ms = cached
            if now < until_ms and self._verifies(certificate, peer, now):
                self._cache[peer] = cached  # most recently used
                return certificate
        task = self._lookups.get(peer)
        if task is None:
            if self._get_agent is None:
                raise GatewayError("policy_denied", f"{peer!r} cannot be looked up: the agent does not follow a registry")
            if len(self._lookups) >= MAX_LOOKUPS_IN_FLIGHT:
                raise IdentityError("rate_limited", f"{MAX_LOOKUPS_IN_FLIGHT} registry lookups of recipients are in flight: {peer!r} is looked up later")
            self.lookups_started += 1
            task = asyncio.get_running_loop().create_task(self._look_up(peer, refusal), name=f"parley-lookup-{peer[:64]}")
            self._lookups[peer] = task
            task.add_done_callback(lambda t: self._lookup_done(peer, t))
        return await asyncio.shield(task)

    def _lookup_done(self, peer: str, task: asyncio.Task[Any]) -> None:
        if self._lookups.get(peer) is task:
            del self._lookups[peer]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone (the sends expired, the agent closed)

    async def _look_up(self, peer: str, refusal: ParleyError | None) -> Any:
        assert self._get_agent is not None
        why = f" ({refusal.detail})" if refusal is not None else ""
        started = time.monotonic()
        try:
            record = await asyncio.wait_for(self._get_agent(peer), LOOKUP_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise self._transient(
                peer,
                "deadline_exceeded",
                "unavailable",
                f"the gateway refused a first contact with {peer!r} (an agent it never saw, or a denied route), and the registry did not answer the lookup of its certificate within {LOOKUP_TIMEOUT_S:g} s; tried again while the sends to it wait",
            ) from None
        except ParleyError as error:
            if error.code == "not_found":
                raise GatewayError("policy_denied", f"no agent {peer!r}: the registry has no agent with that id (the gateway had refused the first contact as it refuses any id it never saw{why})") from error
            if error.code in PERMANENT_LOOKUP_FAILURES:
                raise GatewayError("policy_denied", f"the gateway refused a first contact with {peer!r}{why}, and the registry refused to look {peer!r} up: [{error.code}] {error.detail}") from error
            # Unreachable, unavailable, rate limiting, …: the handshake's backoff tries again until the sends expire.
            code: ErrorCode = "rate_limited" if error.code == "rate_limited" else "unavailable"
            message = f"the gateway refused a first contact with {peer!r} (an agent it never saw, or a denied route), and the registry lookup of its certificate failed: [{error.code}] {error.detail}; tried again while the sends to it wait"
            raise self._transient(peer, error.code, code, message) from error
        except Exception as error:  # a get_agent that broke its contract: transient, typed
            raise self._transient(peer, "internal", "unavailable", f"the registry lookup of {peer!r} failed ({type(error).__name__}); tried again while the sends to it wait") from error
        _log.debug("parley: registry lookup of %s took %.3f s", peer, time.monotonic() - started)
        if record.status == registry_pb2.AGENT_STATUS_REVOKED:
            raise GatewayError("policy_denied", f"the gateway refused a first contact with {peer!r}, and the registry lists {peer!r} revoked")
        if record.status == registry_pb2.AGENT_STATUS_EXPIRED:
            raise GatewayError("policy_denied", f"the gateway refused a first contact with {peer!r}, and the registry lists the certificate of {peer!r} expired")
        if not record.HasField("certificate"):
            self._untrusted(peer, IdentityError("malformed", "the registry returned no certificate"))
        certificate = record.certificate
        try:
            self._verify(certificate, peer, self._clock())
        except IdentityError as error:
            if error.code != "unknown_issuer" or self._refresh is None:
                self._untrusted(peer, error)
            # Issued under a key this agent does not trust yet (an issuer rotation it has not polled): fetch, then once more.
            try:
                await self._refresh()
            except Exception as failed:  # noqa: BLE001 - the check below says what stands
                _log.info("parley: trust bundle refresh for %s's certificate failed: %s", peer, failed)
            try:
                self._verify(certificate, peer, self._clock())
            except IdentityError as again:
                self._untrusted(peer, again)
        self._remember(peer, certificate)
        return certificate

    def _untrusted(self, peer: str, error: IdentityError) -> NoReturn:
        """A returned certificate that does not verify: transient for time and stale revocation data, else
        ``policy_denied`` and a security event. Always raises."""
        if error.code in TRANSIENT_CERTIFICATE_FAILURES:
            raise self._transient(peer, error.code, error.code, f"the registry's certificate of {peer!r} cannot be checked now: {error.detail}; tried again while the sends to it wait") from error
        detail = f"the certificate the registry returned for {peer!r} does not verify against this agent's trust bundle: [{error.code}] {error.detail}"
        if self._on_security is not None:
            try:
                self._on_security(error.code, peer, detail)
            except Exception:  # a listener's failure must not change the outcome
                _log.exception("first-contact security listener failed")
        raise GatewayError("policy_denied", detail) from error

    def _transient(self, peer: str, cause: str, code: ErrorCode, detail: str) -> IdentityError:
        """A lookup failure time can fix: reported (``on_lookup_failed``, with the registry's or the check's code
        ``cause``) and returned as the error the handshake retries on (``code``)."""
        if self._on_lookup_failed is not None:
            try:
                self._on_lookup_failed(peer, cause, detail)
            except Exception:  # a listener's failure must not change the outcome
                _log.exception("first-contact lookup listener failed")
        return IdentityError(code, detail)

    def _verify(self, certificate: Any, peer: str, now: int) -> None:
        if certificate.ByteSize() > MAX_CERTIFICATE_BYTES:
            raise IdentityError("malformed", f"the certificate is larger than {MAX_CERTIFICATE_BYTES} bytes")
        verify_certificate(certificate, self._trust, now, expected_agent_id=peer, revocations=self._revocations)

    def _verifies(self, certificate: Any, peer: str, now: int) -> bool:
        try:
            self._verify(certificate, peer, now)
        except ParleyError:
            return False
        return True

    def _remember(self, peer: str, certificate: Any) -> None:
        self._cache.pop(peer, None)
        self._cache[peer] = (certificate, min(self._clock() + CACHE_TTL_MS, int(certificate.valid_until_ms)))
        while len(self._cache) > MAX_CACHED_PEERS:
            self._cache.popitem(last=False)

    def _bind(self, session_id: bytes, certificate: Any) -> None:
        self._attached.pop(session_id, None)
        self._attached[session_id] = certificate
        while len(self._attached) > MAX_CACHED_PEERS:
            self._attached.popitem(last=False)

    def _forget(self, peer: str, session_id: bytes) -> None:
        self._cache.pop(peer, None)
        self._attached.pop(session_id, None)

    async def close(self) -> None:
        """Cancels the lookups in flight and forgets what is cached."""
        tasks = list(self._lookups.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled or failed: nothing waits for it any more
                pass
        self._lookups.clear()
        self._cache.clear()
        self._attached.clear()


def route_refused(peer: str, refusal: ParleyError) -> GatewayError:
    """The gateway's ``policy_denied`` of an item to ``peer`` it already routes to (an envelope in a session): the message
    names the possible causes, which the gateway does not tell apart (a peer revoked since, or its policy)."""
    return GatewayError(
        "policy_denied", f"{refusal.detail} (the gateway refused the route to {peer!r}; it does not say why: {peer!r} may have been revoked, or the gateway's policy does not allow it)"
    )


def _route_denied(peer: str, refusal: ParleyError) -> GatewayError:
    return GatewayError("policy_denied", f"{refusal.detail} (refused with {peer!r}'s registry certificate attached: the gateway's policy denies this route)")


__all__ = ["CACHE_TTL_MS", "CERTIFICATE_REFUSALS", "MAX_CACHED_PEERS", "MAX_LOOKUPS_IN_FLIGHT", "FirstContact", "route_refused"]
