"""In-process fixtures: an issuer, agents with certificates, a handshake between two configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parley import crypto
from parley.handshake import HandshakeConfig, InitiatorHandshake, ResponderHandshake
from parley.identity import RevocationChecker, TrustBundle, issue_certificate
from parley.session import LocalIdentity, Session

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

    def config(self, identity: LocalIdentity, revocations: RevocationChecker | None = None, **kw: Any) -> HandshakeConfig:
        return HandshakeConfig(identity=identity, trust_bundle=self.trust, revocations=revocations, clock=lambda: self.now, **kw)

    def sessions(self, a: HandshakeConfig, b: HandshakeConfig) -> tuple[Session, Session]:
        init, f1 = InitiatorHandshake.start(a, b.identity.agent_id)
        resp, f2 = ResponderHandshake.accept(b, f1)
        f3, sa = init.receive(f2)
        return sa, resp.receive(f3)
