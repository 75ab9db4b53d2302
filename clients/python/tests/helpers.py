"""In-process fixtures: an issuer, agents with certificates, a handshake between two configs, and a registry's
signed trust bundle that an agent follows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parley import crypto
from parley.handshake import HandshakeConfig, InitiatorHandshake, ResponderHandshake
from parley.identity import RevocationChecker, TrustBundle, issue_certificate, key_id
from parley.session import LocalIdentity, Session
from parley.trust_bundle import ACTIVE, PREPARED, RETIRED, DocumentIssuer, RegistryTrustBundle, TrustBundleChain, trust_bundle_layout
from parley.v1 import identity_pb2

NOW = 1_800_000_000_000
DAY = 86_400_000


@dataclass
class World:
    issuer: crypto.SigningKey = field(default_factory=crypto.SigningKey.generate)
    now: int = NOW

    @property
    def trust(self) -> TrustBundle:
        return TrustBundle.from_public_keys(self.issuer.public_key)

    def identity(self, agent_id: str, *, issuer: crypto.SigningKey | None = None, valid_until_ms: int | None = None, agent_type: str = "worker") -> LocalIdentity:
        key = crypto.SigningKey.generate()
        cert = issue_certificate(
            issuer or self.issuer,
            agent_id=agent_id,
            identity_public_key=key.public_key,
            agent_type=agent_type,
            capabilities=["tasks:read"],
            valid_from_ms=self.now - DAY,
            valid_until_ms=valid_until_ms or self.now + 30 * DAY,
            serial=crypto.random_bytes(16),
        )
        return LocalIdentity(agent_id, key, cert)

    def config(self, identity: LocalIdentity, revocations: RevocationChecker | None = None, *, trust_bundle: TrustBundle | None = None, **kw: Any) -> HandshakeConfig:
        trust = self.trust if trust_bundle is None else trust_bundle
        return HandshakeConfig(identity=identity, trust_bundle=trust, revocations=revocations, clock=lambda: self.now, **kw)

    def sessions(self, a: HandshakeConfig, b: HandshakeConfig) -> tuple[Session, Session]:
        init, f1 = InitiatorHandshake.start(a, b.identity.agent_id)
        resp, f2 = ResponderHandshake.accept(b, f1)
        f3, sa = init.receive(f2)
        return sa, resp.receive(f3)


class FollowedRegistry:
    """A registry's signed trust bundle (§15.9) in process, and a :class:`RegistryTrustBundle` following it.

    Version 1 lists the world's issuer ACTIVE; :meth:`rotate` publishes what an online ``issuer rotate`` does
    (a new key PREPARED, then ACTIVE with the old one RETIRED until ``not_after_ms``, or dropped when None),
    and the follower takes each version as a refresh would.
    """

    REGISTRY_ID = bytes(range(16))

    def __init__(self, world: World) -> None:
        self.world = world
        self.follower = RegistryTrustBundle("127.0.0.1:1", world.trust, registry_id=self.REGISTRY_ID, clock=lambda: world.now)
        self.chain = TrustBundleChain(self.REGISTRY_ID, world.trust)
        self.version = 0
        self.active = world.issuer
        self.publish([(world.issuer, ACTIVE, 0)], world.issuer)

    def publish(self, issuers: list[tuple[crypto.SigningKey, int, int]], signer: crypto.SigningKey) -> None:
        """Signs the next version (issuers as (key, state, not_after_ms)) and has the follower accept it."""
        self.version += 1
        entries = sorted((DocumentIssuer(key_id(k.public_key), k.public_key, state, not_after) for k, state, not_after in issuers), key=lambda i: i.key_id)
        signer_kid = key_id(signer.public_key)
        layout = trust_bundle_layout(self.REGISTRY_ID, self.version, self.world.now, signer_kid, entries)
        document = identity_pb2.SignedTrustBundle(registry_id=self.REGISTRY_ID, version=self.version, issued_at_ms=self.world.now, signer_key_id=signer_kid, signature=signer.sign(layout))
        for i in entries:
            document.issuers.add(key_id=i.key_id, public_key=i.public_key, state=i.state, not_after_ms=i.not_after_ms)  # type: ignore[arg-type]
        self.chain.advance([document.SerializeToString()], self.world.now)
        self.follower._chain = self.chain  # as a refresh leaves it

    def rotate(self, *, old_not_after_ms: int | None) -> crypto.SigningKey:
        """An online issuer rotation: the new key PREPARED, then ACTIVE; the old one RETIRED until
        ``old_not_after_ms`` (or dropped: None). Keys retired by an earlier rotation are no longer listed."""
        old, new = self.active, crypto.SigningKey.generate()
        self.publish([(old, ACTIVE, 0), (new, PREPARED, 0)], old)
        self.publish([(new, ACTIVE, 0)] + ([] if old_not_after_ms is None else [(old, RETIRED, old_not_after_ms)]), new)
        self.active = new
        return new
