"""Noise revision 34 conformance: every XX vector of /work/shared/vectors/noise-xx.json
(cacophony and snow), message by message, the handshake hash where the source
gives it, and the protocol limits (Rekey, nonce exhaustion, wrong turn, truncated
input, a flipped bit, the all-zero DH output)."""

from __future__ import annotations

import json

import pytest

from parley import crypto
from parley.errors import ParleyError, SessionError
from parley.noise import MAX_NONCE, CipherState, HandshakeState, parse_protocol_name

from ._paths import IN_CI, NOISE_VECTORS

if not NOISE_VECTORS.exists() and IN_CI:
    raise RuntimeError(f"Noise vectors missing at {NOISE_VECTORS}; CI requires them")
VECTORS = json.loads(NOISE_VECTORS.read_text())["vectors"] if NOISE_VECTORS.exists() else []
needs_vectors = pytest.mark.skipif(not VECTORS, reason="shared Noise vectors not present")


def _pair(v: dict[str, object]) -> tuple[HandshakeState, HandshakeState]:
    protocol = parse_protocol_name(str(v["protocol_name"]))
    init = HandshakeState(
        protocol,
        initiator=True,
        prologue=bytes.fromhex(str(v["init_prologue"])),
        static_private=bytes.fromhex(str(v["init_static"])),
        fixed_ephemeral_for_testing_only=bytes.fromhex(str(v["init_ephemeral"])),
    )
    resp = HandshakeState(
        protocol,
        initiator=False,
        prologue=bytes.fromhex(str(v["resp_prologue"])),
        static_private=bytes.fromhex(str(v["resp_static"])),
        fixed_ephemeral_for_testing_only=bytes.fromhex(str(v["resp_ephemeral"])),
    )
    return init, resp


@needs_vectors
def test_has_vectors_for_the_protocol_parley_speaks() -> None:
    assert any(v["protocol_name"] == "Noise_XX_25519_ChaChaPoly_BLAKE2b" for v in VECTORS)
    assert len(VECTORS) >= 4


@needs_vectors
@pytest.mark.parametrize("index", range(len(VECTORS)))
def test_vector(index: int) -> None:
    v = VECTORS[index]
    init, resp = _pair(v)
    messages = v["messages"]
    result_i = result_r = None
    for i, m in enumerate(messages[:3]):
        sender, receiver = (init, resp) if i % 2 == 0 else (resp, init)
        payload = bytes.fromhex(m["payload"])
        out, done_s = sender.write_message(payload)
        assert out.hex() == m["ciphertext"], f"message {i}"
        got, done_r = receiver.read_message(out)
        assert got == payload
        if i == 2:
            assert done_s is not None and done_r is not None
            result_i, result_r = done_s, done_r
    assert result_i is not None and result_r is not None
    if "handshake_hash" in v:
        assert result_i.handshake_hash.hex() == v["handshake_hash"]
        assert result_r.handshake_hash.hex() == v["handshake_hash"]
    assert result_i.remote_static == crypto.x25519_keypair(bytes.fromhex(v["resp_static"]))[1]
    for i, m in enumerate(messages[3:], start=3):
        send, recv = (result_i.send, result_r.receive) if i % 2 == 0 else (result_r.send, result_i.receive)
        payload = bytes.fromhex(m["payload"])
        ct = send.encrypt_with_ad(b"", payload)
        assert ct.hex() == m["ciphertext"], f"transport message {i}"
        assert recv.decrypt_with_ad(b"", ct) == payload


def _fresh() -> tuple[HandshakeState, HandshakeState]:
    protocol = parse_protocol_name("Noise_XX_25519_ChaChaPoly_BLAKE2b")
    return (
        HandshakeState(protocol, initiator=True, prologue=b"p", static_private=crypto.random_bytes(32)),
        HandshakeState(protocol, initiator=False, prologue=b"p", static_private=crypto.random_bytes(32)),
    )


def test_rekey_is_the_first_32_bytes_of_encrypt_at_the_max_nonce_and_keeps_n() -> None:
    key = bytes(range(32))
    c = CipherState(key)
    c.set_nonce(7)
    c.rekey()
    assert c.n == 7  # Noise §5.1: Rekey() does not reset n (python3-dissononce does)
    expected = crypto.aead_encrypt(key, MAX_NONCE, b"", bytes(32))[:32]
    assert c.unsafe_key() == expected
    assert len(c.unsafe_key()) == 32  # not 48 (the ciphertext with its tag)
    assert c.encrypt_with_ad(b"", b"x") == crypto.aead_encrypt(expected, 7, b"", b"x")


def test_the_reserved_nonce_is_never_used_for_a_message() -> None:
    c = CipherState(bytes(32))
    c.set_nonce(MAX_NONCE)
    with pytest.raises(SessionError) as e:
        c.encrypt_with_ad(b"", b"x")
    assert e.value.code == "nonce_exhausted"
    with pytest.raises(SessionError):
        c.decrypt_with_ad(b"", bytes(17))


def test_a_failed_decryption_changes_nothing() -> None:
    c = CipherState(bytes(32))
    with pytest.raises(ParleyError) as e:
        c.decrypt_with_ad(b"", bytes(20))
    assert e.value.code == "decrypt_failed"
    assert c.n == 0


def test_repr_shows_no_key() -> None:
    key = bytes(range(1, 33))
    assert key.hex() not in repr(CipherState(key))
    init, _ = _fresh()
    assert "static" not in repr(init)


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_a_damaged_message_poisons_the_reader(damage: str) -> None:
    init, resp = _fresh()
    m1, _ = init.write_message(b"")
    resp.read_message(m1)
    m2, _ = resp.write_message(b"payload")
    bad = bytearray(m2)
    if damage == "flip":
        bad[40] ^= 1
    elif damage == "truncate":
        bad = bad[:50]
    else:
        bad += b"\x00"
    with pytest.raises(SessionError) as e:
        init.read_message(bytes(bad))
    assert e.value.code == "handshake_failed"
    with pytest.raises(SessionError) as again:  # poisoned: even the genuine message fails now
        init.read_message(m2)
    assert again.value.code == "handshake_failed"


def test_wrong_turn_is_refused() -> None:
    init, resp = _fresh()
    with pytest.raises(SessionError):
        resp.write_message(b"")
    with pytest.raises(SessionError):
        init.read_message(bytes(32))


def test_an_all_zero_dh_output_is_refused() -> None:
    # A low-order point as the responder's ephemeral: ee gives the all-zero value.
    init, _ = _fresh()
    m1, _ = init.write_message(b"")
    low_order = bytes(32)  # the point 0
    with pytest.raises(SessionError) as e:
        init.read_message(low_order + bytes(48 + 16))
    assert e.value.code == "handshake_failed"
    with pytest.raises(ParleyError) as direct:
        crypto.x25519(crypto.random_bytes(32), low_order)
    assert direct.value.code == "handshake_failed"


def test_a_complete_handshake_accepts_no_more_messages() -> None:
    init, resp = _fresh()
    m1, _ = init.write_message(b"")
    resp.read_message(m1)
    m2, _ = resp.write_message(b"")
    init.read_message(m2)
    m3, done = init.write_message(b"")
    assert done is not None
    _, done_r = resp.read_message(m3)
    assert done_r is not None
    assert done.send.encrypt_with_ad(b"", b"hi") == crypto.aead_encrypt(done_r.receive.unsafe_key(), 0, b"", b"hi")
    with pytest.raises(SessionError):
        init.write_message(b"")


def test_unknown_protocol_names_are_refused() -> None:
    for name in ["Noise_XX_448_ChaChaPoly_BLAKE2b", "Noise_IK_25519_ChaChaPoly_BLAKE2b", "Noise_XX_25519_AESGCM_SHA256", "nonsense"]:
        with pytest.raises(SessionError):
            parse_protocol_name(name)
