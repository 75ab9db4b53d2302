"""Registry request proofs (docs/PROTOCOL.md §15.3–§15.5)::

    registration   str("parley/v1/registry-registration") fixed16(registry_id) fixed32(challenge) str(agent_id)
                   fixed32(identity_public_key)                                  signed by the agent key
    rotation       str("parley/v1/registry-rotate-key") fixed16(registry_id) fixed32(challenge) str(agent_id)
                   fixed32(old_public_key) fixed32(new_public_key)               signed by the current key
    rotation proof the same fields under str("parley/v1/registry-rotate-key-proof") signed by the new key
    operator       str("parley/v1/operator-request") fixed16(registry_id) str(method_path)
                   fixed32(BLAKE3(request_bytes)) i64(timestamp_ms) fixed16(nonce) fixed16(operator_key_id)
    agent request  str("parley/v1/agent-request") fixed16(registry_id) str(method_path)
                   fixed32(BLAKE3(request_bytes)) i64(timestamp_ms) fixed16(nonce) str(agent_id) fixed16(serial)
    join token     token_hash = BLAKE3(str("parley/v1/join-token") fixed16(token_id) fixed32(token_secret))   (§15.11)
    enrolment      str("parley/v1/registry-enrolment") fixed16(registry_id) fixed16(token_id) fixed32(token_hash)
                   str(agent_id) fixed32(identity_public_key) i64(timestamp_ms)   signed by the new agent key

An agent needs these only to enrol or rotate itself without the registry CLI;
they are here so the SDK checks every layout of the conformance vectors.
"""

from __future__ import annotations

from . import crypto
from .encoding import b64url_encode
from .identity import key_id
from .layout import Layout


def registration_layout(registry_id: bytes, challenge: bytes, agent_id: str, identity_public_key: bytes) -> bytes:
    """§15.4."""
    return (
        Layout("parley/v1/registry-registration")
        .fixed(registry_id, 16, "registry_id")
        .fixed(challenge, 32, "challenge")
        .str(agent_id)
        .fixed(identity_public_key, 32, "identity_public_key")
        .bytes()
    )


def _rotation(domain: str, registry_id: bytes, challenge: bytes, agent_id: str, old: bytes, new: bytes) -> bytes:
    return (
        Layout(domain)
        .fixed(registry_id, 16, "registry_id")
        .fixed(challenge, 32, "challenge")
        .str(agent_id)
        .fixed(old, 32, "old_public_key")
        .fixed(new, 32, "new_public_key")
        .bytes()
    )


def rotation_layout(registry_id: bytes, challenge: bytes, agent_id: str, old_public_key: bytes, new_public_key: bytes) -> bytes:
    """§15.5, signed by the current key."""
    return _rotation("parley/v1/registry-rotate-key", registry_id, challenge, agent_id, old_public_key, new_public_key)


def rotation_proof_layout(registry_id: bytes, challenge: bytes, agent_id: str, old_public_key: bytes, new_public_key: bytes) -> bytes:
    """§15.5, signed by the new key."""
    return _rotation("parley/v1/registry-rotate-key-proof", registry_id, challenge, agent_id, old_public_key, new_public_key)


def operator_request_layout(registry_id: bytes, method_path: str, request_bytes: bytes, timestamp_ms: int, nonce: bytes, operator_key_id: bytes) -> bytes:
    """§15.3: over the exact request bytes' digest."""
    return (
        Layout("parley/v1/operator-request")
        .fixed(registry_id, 16, "registry_id")
        .str(method_path)
        .fixed(crypto.blake3(request_bytes), 32, "request digest")
        .i64(timestamp_ms)
        .fixed(nonce, 16, "nonce")
        .fixed(operator_key_id, 16, "operator_key_id")
        .bytes()
    )


def operator_metadata(operator: crypto.SigningKey, registry_id: bytes, method_path: str, request_bytes: bytes, timestamp_ms: int, nonce: bytes) -> list[tuple[str, str]]:
    """The four §15.3 metadata entries of an operator-signed call."""
    kid = key_id(operator.public_key)
    signature = operator.sign(operator_request_layout(registry_id, method_path, request_bytes, timestamp_ms, nonce, kid))
    return [
        ("parley-operator-key-id", kid.hex()),
        ("parley-operator-timestamp-ms", str(timestamp_ms)),
        ("parley-operator-nonce", nonce.hex()),
        ("parley-operator-signature", b64url_encode(signature)),
    ]


def agent_request_layout(registry_id: bytes, method_path: str, request_bytes: bytes, timestamp_ms: int, nonce: bytes, agent_id: str, serial: bytes) -> bytes:
    """§15.3: an agent's own signature on a directory read (GetAgent, ListAgents)."""
    return (
        Layout("parley/v1/agent-request")
        .fixed(registry_id, 16, "registry_id")
        .str(method_path)
        .fixed(crypto.blake3(request_bytes), 32, "request digest")
        .i64(timestamp_ms)
        .fixed(nonce, 16, "nonce")
        .str(agent_id)
        .fixed(serial, 16, "serial")
        .bytes()
    )


def agent_metadata(agent: crypto.SigningKey, agent_id: str, serial: bytes, registry_id: bytes, method_path: str, request_bytes: bytes, timestamp_ms: int, nonce: bytes) -> list[tuple[str, str]]:
    """The five §15.3 metadata entries of an agent-signed directory read."""
    signature = agent.sign(agent_request_layout(registry_id, method_path, request_bytes, timestamp_ms, nonce, agent_id, serial))
    return [
        ("parley-agent-id", agent_id),
        ("parley-agent-serial", serial.hex()),
        ("parley-agent-timestamp-ms", str(timestamp_ms)),
        ("parley-agent-nonce", nonce.hex()),
        ("parley-agent-signature", b64url_encode(signature)),
    ]


def join_token_hash(token_id: bytes, token_secret: bytes) -> bytes:
    """§15.11: what the registry stores for a join token, and what the enrolment proof signs."""
    return crypto.blake3(Layout("parley/v1/join-token").fixed(token_id, 16, "token_id").fixed(token_secret, 32, "token_secret").bytes())


def enrolment_layout(registry_id: bytes, token_id: bytes, token_hash: bytes, agent_id: str, identity_public_key: bytes, timestamp_ms: int) -> bytes:
    """§15.11: signed by the agent's new identity key to enrol with a join token."""
    return (
        Layout("parley/v1/registry-enrolment")
        .fixed(registry_id, 16, "registry_id")
        .fixed(token_id, 16, "token_id")
        .fixed(token_hash, 32, "token_hash")
        .str(agent_id)
        .fixed(identity_public_key, 32, "identity_public_key")
        .i64(timestamp_ms)
        .bytes()
    )
