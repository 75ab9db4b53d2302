"""The registry's signed, versioned trust bundle (docs/PROTOCOL.md §15.9) and a follower of it.

Signed layout (n issuers, ascending by key id; offsets in bytes)::

    0     str("parley/v1/trust-bundle")          u32(22) ‖ 22 bytes
    26    fixed16(registry_id)
    42    u64(version)
    50    i64(issued_at_ms)
    58    fixed16(signer_key_id)                  the ACTIVE issuer's key id
    74    u32(n)
    78    n × [ fixed16(key_id) ‖ fixed32(public_key) ‖ u8(state) ‖ i64(not_after_ms) ]   (57 bytes each)

:class:`TrustBundleChain` holds the newest accepted document and applies the
follower rule: version ``v+1`` is accepted at version ``v`` only when it is
well-formed, names the same registry, is exactly ``v+1`` (lower, or the same
version with other bytes, is ``rollback``), and is signed by a key of version
``v`` that is not RETIRED there and not past its ``not_after_ms``. Before any
document, a pinned bundle stands for ``v``: documents not signed by a pinned
key are skipped, the first one signed by one is the anchor.

:class:`RegistryTrustBundle` is a :class:`~parley.identity.TrustBundle` that
follows a registry: it polls ``GetTrustBundle``, keeps the newest verified
version in a file (so a restart does not fall back to the pinned bundle), and
keeps the last verified version when the registry cannot be reached. Pass it
as ``trust_bundle`` to :func:`parley.connect`. An agent given one also looks up,
in that registry, a recipient the gateway has never seen (:meth:`RegistryTrustBundle.get_agent`,
``GetAgent`` signed as the agent, §15.3: a first contact, ``parley.directory``).

The saved state records the pinned bundle it was followed from
(:func:`pinned_bundle_hash`); a restart with another pinned bundle does not
use it (``pin_changed``): the pin is the operator's root, and a saved chain
never outranks it. Saved state (the state file's ``document``, as
@parley/protocol's TrustBundleFollower saves it)::

    0     str("parley/v1/followed-trust-bundle")  u32(31) ‖ 31 bytes
    35    fixed32(pin hash)                         pinned_bundle_hash of the pinned bundle
    67    u32(m) ‖ m bytes                          the newest accepted SignedTrustBundle

A file written before the pin was recorded holds the bare SignedTrustBundle
(which never starts with a 0 byte: protobuf has no field 0) and is still read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc

from . import crypto
from .errors import IdentityError
from .gateway import rpc_error_code
from .identity import TrustBundle, TrustedIssuer, has_unknown_fields, key_id
from .layout import Layout
from .registry import agent_metadata
from .session import LocalIdentity, now_ms
from .v1 import identity_pb2, registry_pb2, registry_pb2_grpc

DOMAIN: Final = "parley/v1/trust-bundle"
PINNED_DOMAIN: Final = "parley/v1/pinned-trust-bundle"
FOLLOWED_DOMAIN: Final = "parley/v1/followed-trust-bundle"
_PIN_HASH_BYTES: Final = 32
MAX_ISSUERS: Final = 64
MAX_DOCUMENT_BYTES: Final = 8192
PREPARED: Final = 1
ACTIVE: Final = 2
RETIRED: Final = 3
_STATE_NAMES: Final = {PREPARED: "prepared", ACTIVE: "active", RETIRED: "retired"}
_MAX_SAFE: Final = 2**53 - 1
#: The registry method an agent signs itself (§15.3): a directory read of one agent.
GET_AGENT_PATH: Final = "/parley.v1.RegistryService/GetAgent"
#: Largest GetAgent answer taken: one agent record (a certificate of at most 4096 bytes, its type and capabilities).
MAX_GET_AGENT_BYTES: Final = 64 * 1024

_log = logging.getLogger("parley.trust_bundle")


@dataclass(frozen=True, slots=True)
class DocumentIssuer:
    key_id: bytes
    public_key: bytes
    state: int
    not_after_ms: int


@dataclass(frozen=True, slots=True)
class TrustBundleDocument:
    """A structurally checked document (its signature is checked by :class:`TrustBundleChain`)."""

    registry_id: bytes
    version: int
    issued_at_ms: int
    issuers: tuple[DocumentIssuer, ...]
    signer_key_id: bytes
    signature: bytes
    encoded: bytes

    @property
    def active(self) -> DocumentIssuer:
        return next(i for i in self.issuers if i.state == ACTIVE)

    def layout(self) -> bytes:
        return trust_bundle_layout(self.registry_id, self.version, self.issued_at_ms, self.signer_key_id, self.issuers)

    def trust_bundle(self) -> TrustBundle:
        """Every key it lists (PREPARED ones too); RETIRED ones bounded by their ``not_after_ms``."""
        return TrustBundle([TrustedIssuer(i.key_id, i.public_key, i.not_after_ms if i.state == RETIRED else None) for i in self.issuers])


def _malformed(what: str) -> IdentityError:
    return IdentityError("malformed", what)


def trust_bundle_layout(registry_id: bytes, version: int, issued_at_ms: int, signer_key_id: bytes, issuers: Iterable[DocumentIssuer]) -> bytes:
    """§15.9: the bytes the ACTIVE issuer signs."""
    entries = list(issuers)
    layout = Layout(DOMAIN).fixed(registry_id, 16, "registry_id").u64(version).i64(issued_at_ms).fixed(signer_key_id, 16, "signer_key_id").u32(len(entries))
    for i in entries:
        layout.fixed(i.key_id, 16, "key_id").fixed(i.public_key, 32, "public_key").u8(i.state).i64(i.not_after_ms)
    return layout.bytes()


def decode_document(data: bytes) -> TrustBundleDocument:
    """Decodes and checks a ``SignedTrustBundle`` (§15.9 structure rules; ``malformed``)."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise _malformed(f"trust bundle document larger than {MAX_DOCUMENT_BYTES} bytes")
    message = identity_pb2.SignedTrustBundle()
    try:
        message.ParseFromString(bytes(data))
    except Exception as error:
        raise _malformed("trust bundle document does not decode") from error
    if has_unknown_fields(message) or any(has_unknown_fields(i) for i in message.issuers):
        raise _malformed("trust bundle document carries fields v1 does not define")
    if len(message.registry_id) != 16 or len(message.signer_key_id) != 16 or len(message.signature) != 64:
        raise _malformed("trust bundle document field lengths")
    if not 1 <= message.version <= _MAX_SAFE or not 0 <= message.issued_at_ms <= _MAX_SAFE:
        raise _malformed("trust bundle version or time out of range")
    if not 1 <= len(message.issuers) <= MAX_ISSUERS:
        raise _malformed(f"a trust bundle document holds 1..{MAX_ISSUERS} issuers")
    issuers: list[DocumentIssuer] = []
    previous = b""
    for n, i in enumerate(message.issuers):
        if len(i.key_id) != 16 or len(i.public_key) != 32 or not crypto.constant_time_equal(key_id(i.public_key), i.key_id):
            raise _malformed(f"issuers[{n}]: key id and public key")
        if previous and i.key_id <= previous:
            raise _malformed("issuers must be strictly ascending by key_id")
        previous = bytes(i.key_id)
        if i.state not in _STATE_NAMES:
            raise _malformed(f"issuers[{n}].state must be PREPARED, ACTIVE or RETIRED")
        if not 0 <= i.not_after_ms <= _MAX_SAFE or (i.state == RETIRED) != (i.not_after_ms != 0):
            raise _malformed(f"issuers[{n}].not_after_ms is set for RETIRED keys only")
        issuers.append(DocumentIssuer(bytes(i.key_id), bytes(i.public_key), i.state, i.not_after_ms))
    active = [i for i in issuers if i.state == ACTIVE]
    if len(active) != 1 or len([i for i in issuers if i.state == PREPARED]) > 1:
        raise _malformed("exactly one ACTIVE and at most one PREPARED issuer")
    if active[0].key_id != message.signer_key_id:
        raise _malformed("signer_key_id must be the ACTIVE issuer")
    return TrustBundleDocument(bytes(message.registry_id), message.version, message.issued_at_ms, tuple(issuers), bytes(message.signer_key_id), bytes(message.signature), bytes(data))


def _verify_signature(doc: TrustBundleDocument, trusted: TrustBundle, now: int, previous: TrustBundleDocument | None) -> None:
    signer = trusted.get(doc.signer_key_id)
    if signer is None:
        raise IdentityError("unknown_issuer", f"trust bundle version {doc.version} is signed by a key the trusted bundle does not hold")
    if previous is not None and any(i.key_id == doc.signer_key_id and i.state == RETIRED for i in previous.issuers):
        raise IdentityError("expired", f"trust bundle version {doc.version} is signed by a RETIRED key")
    if signer.not_after_ms is not None and now >= signer.not_after_ms:
        raise IdentityError("expired", f"trust bundle version {doc.version} is signed by a key past its not_after_ms")
    if not crypto.ed25519_verify(doc.signature, doc.layout(), signer.public_key):
        raise IdentityError("bad_signature", f"trust bundle version {doc.version}: the signature does not verify")


def pinned_bundle_hash(bundle: TrustBundle) -> bytes:
    """What identifies a pinned bundle (§15.9): its issuer keys and their validity, not the spelling or order of its JSON.

    ``BLAKE3(str("parley/v1/pinned-trust-bundle") ‖ u32(n) ‖ n × [fixed16(key_id) ‖ fixed32(public_key) ‖
    u8(1 when not_after_ms is set, else 0) ‖ i64(not_after_ms, else 0)])``, issuers ascending by key id.
    """
    issuers = sorted(bundle.issuers(), key=lambda i: i.key_id)
    layout = Layout(PINNED_DOMAIN).u32(len(issuers))
    for i in issuers:
        layout.fixed(i.key_id, 16, "key_id").fixed(i.public_key, 32, "public_key").u8(0 if i.not_after_ms is None else 1).i64(i.not_after_ms if i.not_after_ms is not None else 0)
    return crypto.blake3(layout.bytes())


def encode_followed_state(pin: bytes, document: bytes) -> bytes:
    """The follower's saved state: the pin hash it was followed from ‖ the newest accepted document."""
    return Layout(FOLLOWED_DOMAIN).fixed(pin, _PIN_HASH_BYTES, "pin").var(document, "document").bytes()


def decode_followed_state(data: bytes) -> tuple[bytes | None, bytes]:
    """``(pin hash, document)``; the pin is None for a state saved before it was recorded (the bare document)."""
    prefix = Layout(FOLLOWED_DOMAIN).bytes()
    if not data.startswith(prefix):
        return None, bytes(data)
    at = len(prefix) + _PIN_HASH_BYTES
    length = int.from_bytes(data[at : at + 4], "big") if len(data) >= at + 4 else -1
    if length < 0 or len(data) != at + 4 + length:
        raise _malformed("the saved trust bundle state is truncated or has trailing bytes")
    return bytes(data[len(prefix) : at]), bytes(data[at + 4 :])


def _saved_version(document: bytes) -> int:
    """The saved document's version, for a report (0 when it does not decode)."""
    message = identity_pb2.SignedTrustBundle()
    try:
        message.ParseFromString(document)
    except Exception:  # noqa: BLE001 - only a report
        return 0
    return int(message.version)


class TrustBundleChain:
    """A follower's trusted bundle: the pinned one, then the documents accepted, each checked against the one before."""

    def __init__(self, registry_id: bytes, pinned: TrustBundle, document: TrustBundleDocument | None = None) -> None:
        if len(registry_id) != 16:
            raise _malformed("registry_id is 16 bytes")
        self.registry_id = bytes(registry_id)
        self._pinned = pinned
        self.document = document
        self.trust_bundle = document.trust_bundle() if document is not None else pinned

    @classmethod
    def from_saved(cls, registry_id: bytes, encoded: bytes, pinned: TrustBundle) -> TrustBundleChain:
        """Restores a follower's own saved document (structure, registry, its own signature)."""
        doc = decode_document(encoded)
        if doc.registry_id != registry_id:
            raise IdentityError("identity_mismatch", "the saved trust bundle is of another registry")
        if not crypto.ed25519_verify(doc.signature, doc.layout(), doc.active.public_key):
            raise IdentityError("bad_signature", "the saved trust bundle does not verify under its own active key")
        return cls(registry_id, pinned, doc)

    @property
    def version(self) -> int:
        return self.document.version if self.document is not None else 0

    def advance(self, documents: Iterable[bytes | TrustBundleDocument], now: int) -> list[int]:
        """Accepts documents in order, all or nothing; returns the versions accepted."""
        current, trusted = self.document, self.trust_bundle
        accepted: list[int] = []
        items = list(documents)
        expired_signer = False
        for item in items:
            doc = item if isinstance(item, TrustBundleDocument) else decode_document(item)
            if not crypto.constant_time_equal(doc.registry_id, self.registry_id):
                raise IdentityError("identity_mismatch", f"trust bundle version {doc.version} is of another registry")
            if current is None:
                try:
                    _verify_signature(doc, trusted, now, None)
                except IdentityError as error:
                    # Not yet anchored: a document signed by a key the pinned bundle does not hold, or holds past its
                    # not_after_ms (a bundle pinned during a rotation's grace), is skipped; a later one may anchor.
                    if error.code == "unknown_issuer":
                        continue
                    if error.code == "expired":
                        expired_signer = True
                        continue
                    raise
            else:
                if doc.version <= current.version:
                    if doc.version == current.version and doc.encoded == current.encoded:
                        continue
                    raise IdentityError("rollback", f"trust bundle version {doc.version} is older than (or differs from) the version {current.version} held")
                if doc.version != current.version + 1:
                    raise _malformed(f"trust bundle version {doc.version} does not follow {current.version}")
                _verify_signature(doc, trusted, now, current)
            current, trusted = doc, doc.trust_bundle()
            accepted.append(doc.version)
        if current is None and items:
            if expired_signer:
                raise IdentityError("expired", "the trust bundle versions the registry sent are signed by pinned keys past their not_after_ms, or by keys the pinned bundle does not hold")
            raise IdentityError("unknown_issuer", "no trust bundle version the registry sent is signed by a key of the pinned bundle")
        if accepted:
            self.document, self.trust_bundle = current, trusted
        return accepted


class RegistryTrustBundle(TrustBundle):
    """A :class:`TrustBundle` that follows a registry's signed trust bundle (§15.9).

    ::

        async with RegistryTrustBundle("registry:50051", "trust-bundle.json", state_file="state/bundle.json") as bundle:
            agent = await parley.connect(..., trust_bundle=bundle)

    ``pinned`` is where it starts (a bundle or the §3.3 JSON file); the newest
    verified document is saved in ``state_file`` and used on the next start —
    unless it was followed from another pinned bundle: the pin is the
    operator's root, so the file is then not used (``pin_changed``), the
    follower starts from ``pinned`` and its next accepted document replaces the
    file. A file written before the pin was recorded is used only when a key of
    ``pinned``, still within its ``not_after_ms``, signed its document (the
    anchor a fresh follow would accept), and is then written again with the pin;
    otherwise it is treated as a changed pin. Refused documents (``rollback``,
    ``unknown_issuer``, …) and an unreachable registry leave the last verified
    version in force; ``state`` and ``last_verified_at_ms`` say how it stands.

    ``on_event`` is called with what happens, as a dict without key material
    (exceptions it raises are ignored): ``{"kind": "restored", "version"}``,
    ``{"kind": "restore_failed", "code", "detail"}``, ``{"kind": "pin_changed",
    "version", "from", "to", "detail"}`` (``from``/``to``: the pin hashes in hex;
    ``from`` None for a file that recorded none), ``{"kind": "updated", "from",
    "to", "accepted"}``, ``{"kind": "refused", "code", "version", "detail"}``,
    ``{"kind": "unreachable", "code", "version", "detail"}`` — as
    @parley/protocol's TrustBundleFollower reports them.
    """

    __slots__ = ("_address", "_tls", "_state_file", "_refresh_s", "_channel", "_task", "_chain", "_pinned_bundle", "_pin", "_registry_id", "_lock", "state", "last_verified_at_ms", "_clock", "_on_event")

    def __init__(
        self,
        address: str,
        pinned: TrustBundle | str | Path,
        *,
        tls: grpc.ChannelCredentials | None = None,
        registry_id: bytes | None = None,
        state_file: str | Path | None = None,
        refresh_ms: int = 60_000,
        clock: Callable[[], int] = now_ms,
        on_event: Callable[[dict[str, object]], None] | None = None,
    ) -> None:
        self._pinned_bundle = pinned if isinstance(pinned, TrustBundle) else TrustBundle.from_file(pinned)
        self._pin = pinned_bundle_hash(self._pinned_bundle)
        self._on_event = on_event
        self._address = address
        self._tls = tls
        self._state_file = Path(state_file) if state_file is not None else None
        self._refresh_s = max(0.05, refresh_ms / 1000)
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._registry_id = registry_id
        self._chain: TrustBundleChain | None = None
        self._lock = threading.Lock()
        self._clock = clock
        self.state = "starting"
        self.last_verified_at_ms: int | None = None
        self._restore()

    @property  # type: ignore[override]
    def _by_key_id(self) -> dict[bytes, TrustedIssuer]:
        current = self._chain.trust_bundle if self._chain is not None else self._pinned_bundle
        return current._by_key_id  # noqa: SLF001 - the same class family

    @property
    def version(self) -> int:
        return self._chain.version if self._chain is not None else 0

    def _emit(self, event: dict[str, object]) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # noqa: BLE001 - a reporting hook never changes what the follower does
                pass

    def _pin_changed(self, version: int, saved_pin: bytes | None, detail: str) -> None:
        _log.warning("saved trust bundle %s not used: %s", self._state_file, detail)
        self._emit({"kind": "pin_changed", "version": version, "from": saved_pin.hex() if saved_pin is not None else None, "to": self._pin.hex(), "detail": detail})

    def _restore(self) -> None:
        if self._state_file is None or not self._state_file.exists():
            return
        try:
            saved = json.loads(self._state_file.read_text())
            encoded = base64.urlsafe_b64decode(saved["document"] + "=" * (-len(saved["document"]) % 4))
            pin, document = decode_followed_state(encoded)
            if pin is not None and not crypto.constant_time_equal(pin, self._pin):
                version = _saved_version(document)
                self._pin_changed(version, pin, f"the saved trust bundle (version {version}) was followed from another pinned bundle: starting from the pinned one")
                return
            registry_id = self._registry_id if self._registry_id is not None else bytes.fromhex(saved["registry_id"])
            chain = TrustBundleChain.from_saved(registry_id, document, self._pinned_bundle)
            assert chain.document is not None
            if pin is None:
                # Saved before the pin was recorded, and only the newest document was: it can be related to the pin
                # only when a pinned key signed it itself (a chain anchored further back cannot be checked from it).
                try:
                    _verify_signature(chain.document, self._pinned_bundle, self._clock(), None)
                except IdentityError as error:
                    self._pin_changed(chain.version, None, f"the saved trust bundle (version {chain.version}) records no pinned bundle and is not signed by a key of the pinned one ({error.code}): starting from the pinned one")
                    return
            self._chain = chain
            self._registry_id = registry_id
        except Exception as error:  # a bad file is reported and the pinned bundle used
            _log.warning("saved trust bundle %s not usable (%s): starting from the pinned bundle", self._state_file, error)
            code = error.code if isinstance(error, IdentityError) else "unavailable" if isinstance(error, OSError) else "malformed"
            self._emit({"kind": "restore_failed", "code": code, "detail": str(error)})
            return
        self._emit({"kind": "restored", "version": chain.version})
        if pin is None:
            try:
                self._save()  # records the pin it is now followed from
            except OSError as error:
                _log.error("cannot save the followed trust bundle %s: %s", self._state_file, error)

    def _save(self) -> None:
        if self._state_file is None or self._chain is None or self._chain.document is None:
            return
        doc = self._chain.document
        state = encode_followed_state(self._pin, doc.encoded)
        text = json.dumps({"version": 1, "type": "parley-followed-trust-bundle", "registry_id": doc.registry_id.hex(), "bundle_version": doc.version, "saved_at_ms": now_ms(), "document": base64.urlsafe_b64encode(state).rstrip(b"=").decode()})
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._state_file)

    async def start(self) -> RegistryTrustBundle:
        """Opens the channel, refreshes once (an unreachable registry is logged, not raised) and polls."""
        if self._channel is None:
            self._channel = grpc.aio.secure_channel(self._address, self._tls) if self._tls is not None else grpc.aio.insecure_channel(self._address)
        with contextlib.suppress(IdentityError):
            await self.refresh()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="parley-trust-bundle")
        return self

    async def refresh(self) -> list[int]:
        """Fetches the documents after the version before the one held (so it is compared too) and applies them."""
        if self._channel is None:
            raise IdentityError("unavailable", "not started")
        stub = registry_pb2_grpc.RegistryServiceStub(self._channel)  # type: ignore[no-untyped-call]
        held = self.version
        after = max(0, held - 1)
        documents: list[bytes] = []
        current = 0
        try:
            for _ in range(100):
                response = await stub.GetTrustBundle(registry_pb2.GetTrustBundleRequest(after_version=after), timeout=10)
                if self._registry_id is None:
                    self._registry_id = bytes(response.registry_id)
                current = response.current_version
                documents.extend(d.SerializeToString() for d in response.documents)
                if not response.documents or response.documents[-1].version >= current:
                    break
                after = response.documents[-1].version
        except grpc.aio.AioRpcError as error:
            self.state = "unreachable"
            self._emit({"kind": "unreachable", "code": "unavailable", "version": held, "detail": error.code().name})
            raise IdentityError("unavailable", f"registry unreachable: {error.code().name}") from error
        try:
            if current < held:
                raise IdentityError("rollback", f"the registry's trust bundle version {current} is older than the version {held} held")
            with self._lock:
                if self._chain is None:
                    assert self._registry_id is not None
                    self._chain = TrustBundleChain(self._registry_id, self._pinned_bundle)
                accepted = self._chain.advance(documents, self._clock())
                if self._chain.version < current:
                    raise _malformed(f"the registry announced version {current} but sent documents up to {self._chain.version}")
        except IdentityError as error:
            self.state = "refusing"
            _log.warning("trust bundle refused (%s): keeping version %d", error.code, self.version)
            self._emit({"kind": "refused", "code": error.code, "version": self.version, "detail": str(error)})
            raise
        self.state = "current"
        self.last_verified_at_ms = self._clock()
        if accepted:
            self._emit({"kind": "updated", "from": held, "to": self.version, "accepted": list(accepted)})
            self._save()
        return accepted

    @property
    def registry_id(self) -> bytes | None:
        """The followed registry's id (given, or learnt from its first answer); None before that."""
        return self._registry_id

    async def get_agent(self, agent_id: str, identity: LocalIdentity, *, timeout: float = 5.0) -> registry_pb2.AgentRecord:
        """``GetAgent`` for one agent id, signed as ``identity`` (an agent request signature, §15.3: a registry takes
        an agent's own signed directory read whatever its ``directory_reads`` setting). The record is returned as the
        registry sent it: its certificate is NOT verified here (the caller verifies it against the trust bundle it
        uses).

        Raises:
            IdentityError: the registry's code (``not_found``: no agent with that id; ``permission_denied``,
                ``rate_limited``, ``unavailable``: unreachable, …), ``failed_precondition`` before :meth:`start`,
                ``unavailable`` while the registry's id (which the signature covers) is not known yet, ``malformed``
                for an answer that does not decode or holds no agent.
        """
        if self._channel is None:
            raise IdentityError("failed_precondition", "the RegistryTrustBundle is not started (use it inside `async with`): no registry channel to look agents up in")
        if self._registry_id is None:
            with contextlib.suppress(IdentityError):
                await self.refresh()  # its first answer names the registry
            if self._registry_id is None:
                raise IdentityError("unavailable", "the registry has not answered yet: its id, which an agent request signs, is not known")
        body = registry_pb2.GetAgentRequest(agent_id=agent_id).SerializeToString()
        metadata = agent_metadata(identity.signing_key, identity.agent_id, bytes(identity.certificate.serial), self._registry_id, GET_AGENT_PATH, body, now_ms(), crypto.random_bytes(16))
        # Bytes in, bytes out: the signature covers the exact request bytes sent.
        method = self._channel.unary_unary(GET_AGENT_PATH, request_serializer=None, response_deserializer=None)
        try:
            answer = await method(body, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            code = rpc_error_code(error)
            raise IdentityError(code, f"registry GetAgent {agent_id!r}: {error.details() or error.code().name}") from error  # type: ignore[arg-type]
        except Exception as error:  # the channel closed under the call, …: typed, never raw
            raise IdentityError("unavailable", f"registry GetAgent {agent_id!r} failed ({type(error).__name__})") from error
        if not isinstance(answer, bytes) or len(answer) > MAX_GET_AGENT_BYTES:
            raise _malformed("the registry's GetAgent answer is too large")
        response = registry_pb2.GetAgentResponse()
        try:
            response.ParseFromString(answer)
        except Exception as error:
            raise _malformed("the registry's GetAgent answer does not decode") from error
        if not response.HasField("agent"):
            raise _malformed("the registry's GetAgent answer holds no agent")
        return response.agent

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as error:  # logged; the last verified version stays in force
                _log.warning("trust bundle refresh failed: %s", error)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> RegistryTrustBundle:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RegistryTrustBundle({self._address!r}, version={self.version}, state={self.state!r})"


def state_name(state: int) -> str:
    return _STATE_NAMES.get(state, f"state_{state}")


__all__ = [
    "RegistryTrustBundle",
    "TrustBundleChain",
    "TrustBundleDocument",
    "decode_document",
    "decode_followed_state",
    "encode_followed_state",
    "pinned_bundle_hash",
    "trust_bundle_layout",
    "state_name",
]
