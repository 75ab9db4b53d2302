"""Parley for Python: agents that speak the Parley protocol natively.

Quick start::

    import parley

    identity = parley.load_identity("worker-1.key.json", "worker-1.cert.json")
    async with await parley.connect(
        gateway="gateway.example:7443",
        identity=identity,
        trust_bundle="trust-bundle.json",
        expected_gateway_id="gw-1",
        tls=parley.TlsConfig(root_certificates="ca.pem"),
        state_dir="/var/lib/worker-1/parley",
    ) as agent:
        receipt = await agent.send("planner-1", parley.MessageType.STATUS_UPDATE, {"progress": 0.5})
        async for msg in agent.messages():
            ...
            await msg.ack()

Wire protocol: docs/PROTOCOL.md. Errors: :class:`ParleyError` and subclasses, each
with a stable ``code``.
"""

from .agent import Agent, Message, ResendPolicy, SessionTimeouts, connect
from .crypto import BLAKE3_BACKEND, SigningKey
from .disclosure import Disclosure, verify_disclosure
from .errors import (
    ERROR_CODES,
    DeliveryError,
    ErrorCode,
    GatewayError,
    IdentityError,
    ParleyError,
    SessionError,
    SharedMemoryError,
    StateError,
)
from .gateway import TlsConfig
from .identity import Revocation, RevocationChecker, StaticRevocations, TrustBundle, VerifiedCertificate, verify_certificate
from .keys import load_certificate, load_identity, load_key_file
from .memory import MemoryClient, MemoryInfo, MemoryKeyFault, MemoryListing, MemoryMemberInfo, MemoryUsageInfo, ReadResult, SegmentInfo, WriteResult
from .revocation import RegistryRevocations, RevocationList
from .session import LocalIdentity, SkewLimits
from .trust_bundle import RegistryTrustBundle, TrustBundleChain
from .types import Backoff, Event, MessageType, Receipt

Identity = LocalIdentity

__version__ = "0.1.0"

__all__ = [
    "BLAKE3_BACKEND",
    "ERROR_CODES",
    "Agent",
    "Backoff",
    "DeliveryError",
    "Disclosure",
    "ErrorCode",
    "Event",
    "GatewayError",
    "Identity",
    "IdentityError",
    "LocalIdentity",
    "MemoryClient",
    "MemoryInfo",
    "MemoryKeyFault",
    "MemoryListing",
    "MemoryMemberInfo",
    "MemoryUsageInfo",
    "Message",
    "MessageType",
    "ParleyError",
    "ReadResult",
    "Receipt",
    "RegistryRevocations",
    "RegistryTrustBundle",
    "ResendPolicy",
    "Revocation",
    "RevocationChecker",
    "RevocationList",
    "TrustBundleChain",
    "SegmentInfo",
    "SessionError",
    "SharedMemoryError",
    "SessionTimeouts",
    "SigningKey",
    "SkewLimits",
    "StateError",
    "StaticRevocations",
    "TlsConfig",
    "TrustBundle",
    "VerifiedCertificate",
    "WriteResult",
    "connect",
    "load_certificate",
    "load_identity",
    "load_key_file",
    "verify_certificate",
    "verify_disclosure",
]
