"""Sessions (§6–§8) and the identity-bound handshake (§5): every protocol limit and check, in process."""

from __future__ import annotations

from typing import Any

import pytest

from parley import crypto
from parley.envelope import MAX_PAYLOAD_BYTES, SecureMessage, encode_payload, envelope_signed_bytes, from_value, to_value
from parley.errors import ParleyError, SessionError
from parley.handshake import InitiatorHandshake, ResponderHandshake
from parley.identity import StaticRevocations
from parley.replay import WINDOW_SIZE, MessageHashCache, ReplayWindow
from parley.session import Session

from .helpers import DAY, FollowedRegistry, World


def pair(world: World, **kw: Any) -> tuple[Session, Session]:
    a, b = world.identity("alice"), world.identity("bob")
    return world.sessions(world.config(a, **kw), world.config(b, **kw))


def seal(s: Session, content: object = {"x": 1}, ts: int | None = None, message_type: int = 5) -> Any:
    ts = s._clock() if ts is None else ts
    return s.seal_at(s.allocate_counter(), encode_payload(message_type, content, ts), ts)


def code_of_open(s: Session, envelope: Any, now: int | None = None) -> str:
    try:
        s.open(envelope, now).commit()
        return "ok"
    except ParleyError as error:
        return error.code


def resign(s: Session, e: Any) -> Any:
    e.signature = s.local.signing_key.sign(envelope_signed_bytes(e))
    return e


@pytest.fixture
def world() -> World:
    return World()


def test_round_trip_and_content_types(world: World) -> None:
    a, b = pair(world)
    content = {"s": "ünïcödé ✓", "n": [1, 2.5, -3, None, True], "o": {"k": {}}, "big": 2**53 - 1}
    opened = b.open(seal(a, content).envelope)
    assert opened.content == content and isinstance(opened.content["n"][0], int)  # type: ignore[index]
    opened.commit()
    back = a.open(seal(b, "plain string").envelope)
    assert back.content == "plain string"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2**53 + 1, object(), {1: "x"}, b"bytes"])
def test_content_must_be_json(bad: object) -> None:
    with pytest.raises(SessionError) as e:
        to_value(bad)
    assert e.value.code == "malformed"


def test_content_nesting_is_bounded() -> None:
    deep: object = "x"
    for _ in range(70):
        deep = [deep]
    with pytest.raises(SessionError):
        to_value(deep)
    assert from_value(to_value([[["ok"]]])) == [[["ok"]]]


def test_payload_size_cap(world: World) -> None:
    with pytest.raises(SessionError) as e:
        encode_payload(5, "x" * MAX_PAYLOAD_BYTES, world.now)
    assert e.value.code == "too_large"
    with pytest.raises(SessionError) as t:
        encode_payload(0, {}, world.now)  # UNSPECIFIED
    assert t.value.code == "malformed"


def test_epochs_advance_and_old_keys_are_wiped(world: World) -> None:
    a, b = pair(world, rekey_threshold=2)
    for i in range(9):
        b.open(seal(a, {"i": i}).envelope).commit()
    assert a.send_epoch == 4  # counters 0..8, two per epoch
    assert a._send.held_epochs() == [4]
    assert b.receive_epochs == [0, 1, 2, 3, 4]  # the window still covers counter 0


@pytest.mark.parametrize(
    "field,change,code",
    [
        ("version", 2, "unsupported_version"),
        ("sender_id", "Bad Id", "malformed"),
        ("session_id", b"\x00" * 15, "malformed"),
        ("nonce", 1 << 53, "nonce_exhausted"),
        ("timestamp_ms", 1 << 53, "malformed"),
        ("payload_commitment", b"\x00" * 31, "malformed"),
        ("auth_tag", b"\x00" * 31, "malformed"),
        ("signature", b"\x00" * 63, "malformed"),
        ("encrypted_payload", b"\x00" * 47, "malformed"),
        ("encrypted_payload", b"\x00" * (32 + MAX_PAYLOAD_BYTES + 17), "too_large"),
        ("recipient_id", "carol", "identity_mismatch"),
        ("session_id", b"\x01" * 16, "unknown_session"),
    ],
)
def test_shape_and_routing_checks(world: World, field: str, change: object, code: str) -> None:
    a, b = pair(world)
    e = seal(a).envelope
    setattr(e, field, change)
    assert code_of_open(b, e) == code


@pytest.mark.parametrize("field", ["encrypted_payload", "auth_tag", "payload_commitment", "timestamp_ms", "nonce"])
def test_one_flipped_bit_fails_the_signature(world: World, field: str) -> None:
    a, b = pair(world)
    e = seal(a).envelope
    value = getattr(e, field)
    if isinstance(value, int):
        setattr(e, field, value ^ 1)
    else:
        flipped = bytearray(value)
        flipped[0] ^= 1
        setattr(e, field, bytes(flipped))
    assert code_of_open(b, e) == "bad_signature"


def test_checks_after_the_signature_in_order(world: World) -> None:
    a, b = pair(world)
    # a bad MAC under a valid signature
    e = seal(a).envelope
    e.auth_tag = bytes(32)
    assert code_of_open(b, resign(a, e)) == "bad_tag"
    # timestamps
    assert code_of_open(b, seal(a, ts=world.now - 3_600_001).envelope) == "stale_timestamp"
    assert code_of_open(b, seal(a, ts=world.now + 60_001).envelope) == "future_timestamp"
    # a replay, and a counter left of the window
    first = seal(a).envelope
    assert code_of_open(b, first) == "ok"
    assert code_of_open(b, first) == "replay"


def test_window_edges() -> None:
    w = ReplayWindow()
    assert w.accept(WINDOW_SIZE + 100)
    assert w.check(100) == "too_old" and w.check(101) == "ok"
    assert w.accept(101) and w.check(101) == "duplicate"
    assert w.check(-1) == "out_of_range" and w.check(1 << 53) == "out_of_range"
    assert not w.accept(101)
    restored = ReplayWindow.from_export(*w.export())
    assert restored.check(101) == "duplicate" and restored.top == w.top
    c = MessageHashCache(capacity=2)
    for h in (b"a", b"b", b"c"):
        c.add(h)
    assert b"a" not in c and b"c" in c and len(c) == 2


def test_epoch_skip_limit(world: World) -> None:
    a, b = pair(world, rekey_threshold=1)
    e = seal(a).envelope
    e.nonce = 4097  # a signed counter 4097 epochs ahead (the limit is 4096): refused, nothing derived
    assert code_of_open(b, resign(a, e)) == "replay"
    assert b.receive_epochs == [0]
    e.nonce = 4096  # at the limit: derived, then the MAC (made under epoch 0) fails
    assert code_of_open(b, resign(a, e)) == "bad_tag"
    assert b.receive_epochs == [0]  # derived keys were not committed


def test_open_is_two_phase(world: World) -> None:
    a, b = pair(world)
    e = seal(a).envelope
    opened = b.open(e)
    opened.discard()
    assert b.window.top == -1  # nothing committed
    assert code_of_open(b, e) == "ok"


def test_counter_limit(world: World) -> None:
    a, _ = pair(world)
    a._send_counter = (1 << 53) - 1
    a.allocate_counter()
    with pytest.raises(SessionError) as e:
        a.allocate_counter()
    assert e.value.code == "nonce_exhausted"


def test_revocation_is_checked_at_every_message(world: World) -> None:
    revocations = StaticRevocations()
    a, b = pair(world, revocations=revocations)
    assert code_of_open(b, seal(a).envelope) == "ok"
    b._revocations = StaticRevocations(agent_ids={"alice"})
    assert code_of_open(b, seal(a).envelope) == "revoked"
    assert b.closed and code_of_open(b, seal(a).envelope) == "unknown_session"  # §8.4: the session is closed

    class Stale:
        def check(self, agent_id: str, serial: bytes, now_ms: int) -> None:
            raise RuntimeError("cannot answer")

    a, b = pair(world, revocations=revocations)
    b._revocations = Stale()
    assert code_of_open(b, seal(a).envelope) == "revocation_stale"  # fail closed
    assert not b.closed  # fresher data may clear the peer


def test_the_peers_issuer_is_looked_up_in_the_live_trust_bundle_at_every_open(world: World) -> None:
    # §8.1 step 2, §8.4: the bundle as it is at the open (here one following a registry), never a copy taken
    # at the handshake: the issuer retired with a bound refuses from that bound on, then gone refuses too.
    registry = FollowedRegistry(world)
    a, b = pair(world, trust_bundle=registry.follower)
    assert code_of_open(b, seal(a).envelope) == "ok"
    registry.rotate(old_not_after_ms=world.now + DAY)  # retired, trusted a day more
    assert code_of_open(b, seal(a).envelope) == "ok" and b.peer_issuer_not_after_ms == world.now + DAY
    assert code_of_open(b, seal(a).envelope, world.now + DAY) == "expired"
    assert b.closed and code_of_open(b, seal(a).envelope) == "unknown_session"  # closed, keys wiped
    a, b = pair(world, trust_bundle=registry.follower)  # the world's issuer still signs certificates: a new session
    assert code_of_open(b, seal(a).envelope) == "ok"
    registry.rotate(old_not_after_ms=None)  # the peer's issuer leaves the bundle
    assert code_of_open(b, seal(a).envelope) == "unknown_issuer"
    assert b.closed and code_of_open(b, seal(a).envelope) == "unknown_session"


def test_repr_hides_keys(world: World) -> None:
    a, _ = pair(world)
    send, receive = a.export_keys()
    assert send[0][1].hex() not in repr(a) and "alice" in repr(a)


# --- handshake ----------------------------------------------------------------------------------


def test_handshake_checks(world: World) -> None:
    alice, bob = world.identity("alice"), world.identity("bob")
    # revoked peer: refused when its certificate arrives
    init, f1 = InitiatorHandshake.start(world.config(alice), "bob")
    resp, f2 = ResponderHandshake.accept(world.config(bob, revocations=StaticRevocations(agent_ids={"alice"})), f1)
    f3, _ = init.receive(f2)
    with pytest.raises(ParleyError) as e:
        resp.receive(f3)
    assert e.value.code == "revoked"
    # unknown issuer
    rogue = World()
    mallory = rogue.identity("bob")
    init, f1 = InitiatorHandshake.start(world.config(alice), "bob")
    _, f2 = ResponderHandshake.accept(rogue.config(mallory), f1)
    with pytest.raises(ParleyError) as e:
        init.receive(f2)
    assert e.value.code == "unknown_issuer"
    # a certificate for another agent than the frames name
    carol = world.identity("carol")
    init, f1 = InitiatorHandshake.start(world.config(alice), "bob")
    f1.recipient_id = "carol"
    _, f2 = ResponderHandshake.accept(world.config(carol), f1)
    f2.sender_id = "bob"
    with pytest.raises(ParleyError) as e:
        init.receive(f2)
    assert e.value.code in ("handshake_failed", "identity_mismatch")  # the prologue differs, so Noise fails first


def test_an_expired_peer_certificate_is_refused(world: World) -> None:
    old = world.identity("bob", valid_until_ms=world.now - 1)
    init, f1 = InitiatorHandshake.start(world.config(world.identity("alice")), "bob")
    _, f2 = ResponderHandshake.accept(world.config(old), f1)
    with pytest.raises(ParleyError) as e:
        init.receive(f2)
    assert e.value.code == "expired"


@pytest.mark.parametrize(
    "change,code",
    [
        (lambda f: setattr(f, "version", 2), "unsupported_version"),
        (lambda f: setattr(f, "session_id", b"x"), "malformed"),
        (lambda f: setattr(f, "step", 2), "handshake_failed"),
        (lambda f: setattr(f, "noise_message", b"x" * 31), "malformed"),
        (lambda f: setattr(f, "rekey_threshold", 0), "malformed"),
        (lambda f: setattr(f, "recipient_id", "carol"), "identity_mismatch"),
        (lambda f: setattr(f, "sender_id", "bob"), "malformed"),
    ],
)
def test_step_1_shape(world: World, change: Any, code: str) -> None:
    _, f1 = InitiatorHandshake.start(world.config(world.identity("alice")), "bob")
    change(f1)
    with pytest.raises(ParleyError) as e:
        ResponderHandshake.accept(world.config(world.identity("bob")), f1)
    assert e.value.code == code


def test_a_relay_that_rewrites_a_routing_field_breaks_the_handshake(world: World) -> None:
    alice, bob = world.identity("alice"), world.identity("bob")
    init, f1 = InitiatorHandshake.start(world.config(alice), "bob")
    f1.rekey_threshold = 7  # rewritten in transit: prologues differ
    resp, f2 = ResponderHandshake.accept(world.config(bob), f1)
    f2.rekey_threshold = init.rekey_threshold
    with pytest.raises(ParleyError) as e:
        init.receive(f2)
    assert e.value.code == "handshake_failed"


def test_a_handshake_takes_one_final_frame(world: World) -> None:
    alice, bob = world.identity("alice"), world.identity("bob")
    init, f1 = InitiatorHandshake.start(world.config(alice), "bob")
    resp, f2 = ResponderHandshake.accept(world.config(bob), f1)
    f3, _ = init.receive(f2)
    with pytest.raises(ParleyError):
        init.receive(f2)
    resp.receive(f3)
    with pytest.raises(ParleyError):
        resp.receive(f3)


def test_envelope_ids_are_distinct_per_message(world: World) -> None:
    a, b = pair(world)
    hashes = {seal(a).message_hash for _ in range(5)}
    assert len(hashes) == 5
    assert SecureMessage().ByteSize() == 0
    assert DAY > 0
    assert crypto.blake3(b"") != bytes(32)
