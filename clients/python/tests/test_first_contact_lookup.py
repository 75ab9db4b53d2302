"""A first contact with an agent the gateway never saw (docs/PROTOCOL.md §10.3 step 5, §5.4, §17.2 item 6;
``parley.directory``), against fake Connect streams and a fake registry.

The gateway knows recipients only from the certificates of agents it has seen and refuses a step 1 to any other
``policy_denied``. An agent whose trust bundle follows its registry (a :class:`RegistryTrustBundle`) then looks the
recipient up (``GetAgent``, signed as itself), verifies the certificate and sends the SAME step 1 again with it
attached (``recipient_certificate``); the gateway stores it for the offline recipient (``QUEUED``) and the handshake
proceeds as any first contact with an offline recipient. Timeouts are shortened as in test_first_contact.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from parley import crypto
from parley.agent import Agent, Message, ResendPolicy
from parley.directory import CERTIFICATE_REFUSALS, MAX_CACHED_PEERS, FirstContact
from parley.encoding import b64url_decode
from parley.errors import DeliveryError, GatewayError, IdentityError, ParleyError
from parley.gateway import ERROR_CODE_METADATA_KEY
from parley.identity import TrustBundle, verify_certificate
from parley.registry import agent_request_layout
from parley.session import DEFAULT_SKEW, LocalIdentity, SkewLimits, now_ms
from parley.state import MemoryStateStore
from parley.trust_bundle import GET_AGENT_PATH, RegistryTrustBundle
from parley.types import Event, MessageType
from parley.v1 import gateway_pb2, registry_pb2

from .helpers import World
from .test_delivery_contract import GatewayCall, Relay, start_loops, wait_for
from .test_first_contact import collect, connect_to, settled
from .test_gateway_replies import memory_agent, run

QUEUED = gateway_pb2.DELIVERY_STATUS_QUEUED
DELIVERED = gateway_pb2.DELIVERY_STATUS_DELIVERED
ROUTE_DENIED = "the route to this recipient is not allowed"


@pytest.fixture
def world() -> World:
    return World(now=now_ms())  # the agents' own checks (handshakes, expiry) run on the real clock


class FakeRegistry(RegistryTrustBundle):
    """A registry-following trust bundle (the world's issuer) whose ``GetAgent`` answers from ``agents``: a
    certificate's agent (an AgentRecord), or ``errors`` (an exception to raise for that id); ``gate``, when set,
    holds every lookup until it is set."""

    def __init__(self, world: World) -> None:
        super().__init__("127.0.0.1:1", world.trust, registry_id=bytes(range(16)))
        self.agents: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.down = False
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    def register(self, identity: LocalIdentity, status: int = registry_pb2.AGENT_STATUS_ACTIVE) -> None:
        self.agents[identity.agent_id] = registry_pb2.AgentRecord(agent_id=identity.agent_id, agent_type="worker", status=status, certificate=identity.certificate)  # type: ignore[arg-type]

    async def get_agent(self, agent_id: str, identity: LocalIdentity, *, timeout: float = 5.0) -> Any:
        self.calls.append(agent_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise IdentityError("unavailable", "registry unreachable: UNAVAILABLE")
        if agent_id in self.errors:
            raise self.errors[agent_id]
        if agent_id not in self.agents:
            raise IdentityError("not_found", f"no agent {agent_id}")
        return self.agents[agent_id]

    async def refresh(self) -> list[int]:
        return []


class IntroducingGateway(GatewayCall):
    """A gateway that knows the agents in ``known``: a step 1 to any other is refused ``policy_denied`` unless it
    carries that agent's certificate (then stored, QUEUED, and the agent known from then on — the certificate is
    remembered); ``deny``: its policy denies the route whatever the certificate. Other items: ``status``."""

    def __init__(self, known: set[str] | None = None, status: int = DELIVERED) -> None:
        super().__init__()
        self.known = set(known or ())
        self.introduced: list[Any] = []
        self.deny = False
        self.status = status

    async def write(self, request: Any) -> None:
        self.written.append(request)
        if request.WhichOneof("kind") != "send" or request.send.quiet:
            return
        rid = request.send.request_id
        frame = request.send.handshake if request.send.WhichOneof("item") == "handshake" else None
        status = self.status
        if frame is not None and frame.step == 1:
            to = frame.recipient_id
            if to not in self.known:
                if not request.send.HasField("recipient_certificate"):
                    self.play(rejected=gateway_pb2.Rejected(request_id=rid, code="policy_denied", message=ROUTE_DENIED))
                    return
                cert = request.send.recipient_certificate
                if cert.agent_id != to:
                    self.play(rejected=gateway_pb2.Rejected(request_id=rid, code="identity_mismatch", message="recipient_certificate refused"))
                    return
                if not self.deny:
                    self.known.add(to)
                    self.introduced.append(cert)
                status = QUEUED  # stored for the offline recipient
            if self.deny:
                self.play(rejected=gateway_pb2.Rejected(request_id=rid, code="policy_denied", message=ROUTE_DENIED))
                return
        self.play(accepted=gateway_pb2.Accepted(request_id=rid, status=status))  # type: ignore[arg-type]


def step1_requests(call: GatewayCall) -> list[Any]:
    """The Outbound items of step 1 frames written, in order (with their recipient_certificate, if any)."""
    return [r.send for r in call.written if r.WhichOneof("kind") == "send" and r.send.WhichOneof("item") == "handshake" and r.send.handshake.step == 1]


def sender(world: World, events: list[Event], trust: TrustBundle, **options: Any) -> Agent:
    bob = memory_agent(world.identity("bob", agent_type="planner"), trust, events, **options)
    bob._store = MemoryStateStore()
    return bob


def security(events: list[Event], stage: str) -> list[dict[str, Any]]:
    return [e.fields for e in events if e.kind == "security" and e.fields.get("stage") == stage]


def test_a_step_1_to_an_agent_the_gateway_never_saw_goes_again_with_its_registry_certificate_and_is_delivered_once(world: World) -> None:
    # Before: refused policy_denied at once, so every recipient had to be started once before anyone could write to it.
    a_events: list[Event] = []
    b_events: list[Event] = []
    alice_id = world.identity("alice")
    registry = FakeRegistry(world)
    registry.register(alice_id)
    bob = sender(world, b_events, registry, handshake_timeout=0.3, resend=ResendPolicy(initial_s=0.4, max_s=1.0))
    alice = memory_agent(alice_id, world.trust, a_events)
    alice._store = MemoryStateStore()
    gw = Relay()

    async def scenario() -> None:
        b_call = IntroducingGateway(known={"bob"})
        connect_to(bob, b_call)
        one = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"n": 1}, timeout=30))
        two = asyncio.ensure_future(bob.send("alice", MessageType.TASK_ASSIGNMENT, {"n": 2}, timeout=30))
        await wait_for(lambda: len(step1_requests(b_call)) >= 2)
        first, again = step1_requests(b_call)[:2]
        # The SAME step 1 (byte for byte: a responder drops copies of a step 1 whose session it holds), now carrying
        # alice's certificate as the registry issued it.
        assert first.handshake.SerializeToString() == again.handshake.SerializeToString()
        assert not first.HasField("recipient_certificate") and again.recipient_certificate == alice_id.certificate
        assert registry.calls == ["alice"] and b_call.introduced == [alice_id.certificate]
        # QUEUED for the offline recipient: waited on, and resent on the backoff — with the certificate.
        await wait_for(lambda: len(step1_requests(b_call)) >= 3, 3)
        resent = step1_requests(b_call)[2]
        assert resent.handshake.SerializeToString() == first.handshake.SerializeToString() and resent.recipient_certificate == alice_id.certificate
        assert not one.done() and not two.done() and bob.pending() == 2

        # Alice starts for the first time; her mailbox drains: bob's step 1 (two copies: she takes one), her step 2.
        a_call = GatewayCall()
        connect_to(alice, a_call)
        tasks = start_loops(alice)
        handed: list[Message] = []
        tasks.append(asyncio.ensure_future(collect(alice, handed)))
        gw.deliver(a_call, handshake=first.handshake)
        gw.deliver(a_call, handshake=resent.handshake)
        gw.deliver(b_call, handshake=await gw.next(a_call, "handshake"))
        b_call.status = DELIVERED
        await wait_for(lambda: any(r.send.handshake.step == 3 for r in b_call.written if r.WhichOneof("kind") == "send" and r.send.WhichOneof("item") == "handshake"))
        [step3] = [r.send.handshake for r in b_call.written if r.WhichOneof("kind") == "send" and r.send.WhichOneof("item") == "handshake" and r.send.handshake.step == 3]
        gw.deliver(a_call, handshake=step3)
        for _ in range(2):
            gw.deliver(a_call, envelope=await gw.next(b_call, "envelope"))
        await wait_for(lambda: len(handed) == 2)
        for message in handed:
            await message.ack()
        for _ in range(2):
            gw.deliver(b_call, receipt=await gw.next(a_call, "receipt"))
        receipts = [await asyncio.wait_for(s, 5) for s in (one, two)]
        assert sorted(m.content["n"] for m in handed) == [1, 2]  # type: ignore[index]
        assert {r.message_hash for r in receipts} == {m.message_hash for m in handed}
        await asyncio.sleep(0.3)
        assert len(handed) == 2 and len(alice.sessions()) == 1 and settled(b_events) == ["ok", "ok"]
        assert registry.calls == ["alice"] and bob._first_contact._attached == {}  # bound while the handshake ran only
        for t in tasks:
            t.cancel()
        await alice.close()
        await bob.close()

    run(scenario)


def test_refused_policy_denied_again_with_the_certificate_attached_settles_the_sends_policy_denied(world: World) -> None:
    events: list[Event] = []
    registry = FakeRegistry(world)
    registry.register(world.identity("alice"))
    bob = sender(world, events, registry)

    async def scenario() -> None:
        b_call = IntroducingGateway(known={"bob"})
        b_call.deny = True  # the gateway's policy: bob may not write to alice
        connect_to(bob, b_call)
        registry.gate = asyncio.Event()  # the lookup answers once both sends wait on the handshake
        sends = [asyncio.ensure_future(bob.send("alice", MessageType.STATUS_UPDATE, {"n": n}, timeout=10)) for n in range(2)]
        await wait_for(lambda: bob.pending() == 2 and registry.calls == ["alice"])
        registry.gate.set()
        for sending in sends:
            with pytest.raises(GatewayError) as error:
                await asyncio.wait_for(sending, 5)
            assert error.value.code == "policy_denied" and "certificate attached" in error.value.detail
        await asyncio.sleep(0.2)
        requests = step1_requests(b_call)
        assert len(requests) == 2 and requests[1].HasField("recipient_certificate")  # no further attempt
        assert settled(events) == ["policy_denied", "policy_denied"] and bob.pending() == 0 and registry.calls == ["alice"]
        await bob.close()

    run(scenario)


def test_an_agent_the_registry_does_not_know_settles_policy_denied_naming_the_cause(world: World) -> None:
    events: list[Event] = []
    registry = FakeRegistry(world)  # no alice
    bob = sender(world, events, registry)

    async def scenario() -> None:
        b_call = IntroducingGateway(known={"bob"})
        connect_to(bob, b_call)
        with pytest.raises(GatewayError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10)
        assert error.value.code == "policy_denied" and "the registry has no agent with that id" in error.value.detail
        await asyncio.sleep(0.2)
        assert len(step1_requests(b_call)) == 1 and registry.calls == ["alice"] and settled(events) == ["policy_denied"]
        await bob.close()

    run(scenario)


@pytest.mark.parametrize("case", ["other issuer", "other agent", "revoked in the registry"])
def test_a_certificate_that_does_not_verify_settles_policy_denied_saying_so(world: World, case: str) -> None:
    events: list[Event] = []
    registry = FakeRegistry(world)
    if case == "other issuer":
        registry.register(world.identity("alice", issuer=crypto.SigningKey.generate()))
    elif case == "other agent":
        registry.agents["alice"] = registry_pb2.AgentRecord(agent_id="alice", status=registry_pb2.AGENT_STATUS_ACTIVE, certificate=world.identity("carol").certificate)
    else:
        registry.register(world.identity("alice"), status=registry_pb2.AGENT_STATUS_REVOKED)
    bob = sender(world, events, registry)

    async def scenario() -> None:
        b_call = IntroducingGateway(known={"bob"})
        connect_to(bob, b_call)
        with pytest.raises(GatewayError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10)
        assert error.value.code == "policy_denied"
        if case == "revoked in the registry":
            assert "lists 'alice' revoked" in error.value.detail and security(events, "directory") == []
        else:
            assert "does not verify against this agent's trust bundle" in error.value.detail
            [event] = security(events, "directory")
            assert event["peer"] == "alice" and event["code"] == ("unknown_issuer" if case == "other issuer" else "identity_mismatch")
        assert len(step1_requests(b_call)) == 1 and b_call.introduced == []  # nothing unverified is attached
        await bob.close()

    run(scenario)


def test_an_unreachable_registry_is_retried_on_the_backoff_and_the_sends_expire(world: World) -> None:
    events: list[Event] = []
    registry = FakeRegistry(world)
    registry.register(world.identity("alice"))
    registry.down = True
    skew = SkewLimits(max_age_ms=2500, max_future_ms=DEFAULT_SKEW.max_future_ms)
    bob = sender(world, events, registry, skew=skew, resend=ResendPolicy(initial_s=0.3, max_s=0.6))

    async def scenario() -> None:
        b_call = IntroducingGateway(known={"bob"})
        connect_to(bob, b_call)
        started = now_ms()
        with pytest.raises(DeliveryError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10)
        assert error.value.code == "expired" and now_ms() >= started + 2500
        await asyncio.sleep(0.3)
        assert settled(events) == ["expired"] and bob.pending() == 0
        assert len(registry.calls) >= 3 and set(registry.calls) == {"alice"}  # tried again while the send lived
        assert all(not r.HasField("recipient_certificate") for r in step1_requests(b_call))
        await bob.close()

    run(scenario)


def test_a_registry_back_before_the_sends_expire_lets_the_first_contact_proceed(world: World) -> None:
    events: list[Event] = []
    alice_id = world.identity("alice")
    registry = FakeRegistry(world)
    registry.register(alice_id)
    registry.down = True
    bob = sender(world, events, registry, resend=ResendPolicy(initial_s=0.2, max_s=0.4))

    async def scenario() -> None:
        b_call = IntroducingGateway(known={"bob"})
        connect_to(bob, b_call)
        sending = asyncio.ensure_future(bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=30))
        await wait_for(lambda: len(registry.calls) >= 2)
        registry.down = False
        await wait_for(lambda: b_call.introduced == [alice_id.certificate])
        assert not sending.done() and bob.pending() == 1 and len(bob._initiating) == 1  # QUEUED: waits for step 2
        sending.cancel()
        await bob.close()

    run(scenario)


def test_without_a_registry_following_trust_bundle_the_first_contact_fails_at_once_saying_what_it_needs(world: World) -> None:
    events: list[Event] = []
    bob = sender(world, events, world.trust)  # a pinned bundle: no registry to look alice up in

    async def scenario() -> None:
        b_call = IntroducingGateway(known={"bob"})
        connect_to(bob, b_call)
        with pytest.raises(GatewayError) as error:
            await bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=10)
        assert error.value.code == "policy_denied"
        assert "RegistryTrustBundle" in error.value.detail and "connect to the gateway once" in error.value.detail
        assert len(step1_requests(b_call)) == 1 and settled(events) == ["policy_denied"]
        await bob.close()

    run(scenario)


def test_a_recipient_the_gateway_knows_costs_no_lookup(world: World) -> None:
    events: list[Event] = []
    registry = FakeRegistry(world)
    registry.register(world.identity("alice"))
    bob = sender(world, events, registry, handshake_timeout=0.2)

    async def scenario() -> None:
        b_call = IntroducingGateway(known={"bob", "alice"}, status=DELIVERED)
        connect_to(bob, b_call)
        sending = asyncio.ensure_future(bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=30))
        await wait_for(lambda: len(step1_requests(b_call)) >= 1)
        await asyncio.sleep(0.3)
        assert registry.calls == [] and not any(r.HasField("recipient_certificate") for r in step1_requests(b_call))
        sending.cancel()
        await bob.close()

    run(scenario)


def test_one_lookup_per_peer_for_many_concurrent_sends(world: World) -> None:
    events: list[Event] = []
    registry = FakeRegistry(world)
    for name in ("alice", "carol"):
        registry.register(world.identity(name))
    registry.gate = asyncio.Event()
    bob = sender(world, events, registry)

    async def scenario() -> None:
        assert registry.gate is not None
        b_call = IntroducingGateway(known={"bob"})
        connect_to(bob, b_call)
        sends = [asyncio.ensure_future(bob.send(to, MessageType.STATUS_UPDATE, {"n": n}, timeout=30)) for n in range(10) for to in ("alice", "carol")]
        await wait_for(lambda: sorted(registry.calls) == ["alice", "carol"])
        await wait_for(lambda: bob.pending() == 20)
        await asyncio.sleep(0.3)
        assert sorted(registry.calls) == ["alice", "carol"]  # held: one lookup per peer
        registry.gate.set()
        await wait_for(lambda: sorted(c.agent_id for c in b_call.introduced) == ["alice", "carol"])
        # Direct callers share the lookup too, and then the cache.
        results = await asyncio.gather(*(bob._first_contact.certificate_of("alice") for _ in range(10)))
        assert all(r.agent_id == "alice" for r in results) and sorted(registry.calls) == ["alice", "carol"]
        for s in sends:
            s.cancel()
        await bob.close()

    run(scenario)


def test_the_lookup_is_shared_while_in_flight_and_the_cache_is_bounded(world: World) -> None:
    identities = {f"agent-{i}": world.identity(f"agent-{i}") for i in range(MAX_CACHED_PEERS + 44)}
    calls: list[str] = []
    gate = asyncio.Event()

    async def get_agent(agent_id: str) -> Any:
        calls.append(agent_id)
        await gate.wait()
        return registry_pb2.AgentRecord(agent_id=agent_id, status=registry_pb2.AGENT_STATUS_ACTIVE, certificate=identities[agent_id].certificate)

    async def scenario() -> None:
        directory = FirstContact(get_agent=get_agent, trust_bundle=world.trust)
        shared = [asyncio.ensure_future(directory.certificate_of("agent-0")) for _ in range(20)]
        await asyncio.sleep(0.05)
        assert calls == ["agent-0"] and len(directory._lookups) == 1
        gate.set()
        assert {bytes(c.serial) for c in await asyncio.gather(*shared)} == {bytes(identities["agent-0"].certificate.serial)}
        assert directory._lookups == {}
        for name in identities:
            verify_certificate(await directory.certificate_of(name), world.trust, now_ms(), expected_agent_id=name)
        assert len(directory._cache) == MAX_CACHED_PEERS and "agent-0" not in directory._cache  # the oldest went first
        assert len(calls) == len(identities)  # agent-0 came from the cache
        await directory.certificate_of("agent-0")  # evicted: looked up again
        assert calls.count("agent-0") == 2
        for i in range(MAX_CACHED_PEERS + 44):
            directory._bind(i.to_bytes(16, "big"), identities["agent-1"].certificate)
        assert len(directory._attached) == MAX_CACHED_PEERS
        await directory.close()

    run(scenario)


def test_get_agent_is_signed_as_the_agent_and_maps_the_registrys_codes(world: World) -> None:
    # RegistryTrustBundle.get_agent against an in-process gRPC registry: the §15.3 agent request signature over the
    # exact request bytes, and NOT_FOUND (parley-error-code not_found) as IdentityError not_found.
    bob = world.identity("bob")
    alice = world.identity("alice")
    registry_id = bytes(range(16))
    seen: list[dict[str, str]] = []

    async def get_agent(body: bytes, context: Any) -> bytes:
        metadata = {k: v for k, v in context.invocation_metadata()}
        seen.append(metadata)
        request = registry_pb2.GetAgentRequest.FromString(body)
        signature = b64url_decode(metadata["parley-agent-signature"])
        layout = agent_request_layout(
            registry_id, GET_AGENT_PATH, body, int(metadata["parley-agent-timestamp-ms"]), bytes.fromhex(metadata["parley-agent-nonce"]), metadata["parley-agent-id"], bytes.fromhex(metadata["parley-agent-serial"])
        )
        if not crypto.ed25519_verify(signature, layout, bob.signing_key.public_key):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "agent request signature does not verify")
        if request.agent_id != "alice":
            context.set_trailing_metadata(((ERROR_CODE_METADATA_KEY, "not_found"),))
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no agent {request.agent_id}")
        answer: bytes = registry_pb2.GetAgentResponse(agent=registry_pb2.AgentRecord(agent_id="alice", status=registry_pb2.AGENT_STATUS_ACTIVE, certificate=alice.certificate)).SerializeToString()
        return answer

    async def scenario() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(get_agent, request_deserializer=None, response_serializer=None)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("parley.v1.RegistryService", {"GetAgent": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        bundle = RegistryTrustBundle(f"127.0.0.1:{port}", world.trust, registry_id=registry_id)
        try:
            with pytest.raises(IdentityError) as error:
                await bundle.get_agent("alice", bob)
            assert error.value.code == "failed_precondition"  # not started: no channel
            bundle._channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            record = await bundle.get_agent("alice", bob)
            assert record.certificate == alice.certificate
            assert seen[0]["parley-agent-id"] == "bob" and seen[0]["parley-agent-serial"] == bytes(bob.certificate.serial).hex()
            with pytest.raises(IdentityError) as error:
                await bundle.get_agent("nobody", bob)
            assert error.value.code == "not_found"
            assert seen[0]["parley-agent-nonce"] != seen[1]["parley-agent-nonce"]
        finally:
            await bundle.close()
            await server.stop(None)

    run(scenario)


# Review findings (as @parley/client's first-contact.ts): a transient answer of the gateway to a step 1 carrying the
# certificate dropped it (every retry read the registry again); a failed lookup left no trace a program could see; a
# handshake that gave up during the lookup was raised as the gateway's policy_denied refusal.

TRANSIENT_ANSWERS = ["unavailable", "deadline_exceeded", "cancelled", "rate_limited", "quota_exceeded", "revocation_stale", "not_yet_valid", "internal", "shutting_down"]


def directory_of(world: World, calls: list[str], **options: Any) -> FirstContact:
    alice = world.identity("alice")

    async def get_agent(peer: str) -> Any:
        calls.append(peer)
        return registry_pb2.AgentRecord(agent_id=peer, status=registry_pb2.AGENT_STATUS_ACTIVE, certificate=alice.certificate)

    return FirstContact(get_agent=get_agent, trust_bundle=world.trust, **options)


@pytest.mark.parametrize("code", TRANSIENT_ANSWERS + sorted(CERTIFICATE_REFUSALS))
def test_only_the_gateways_refusal_of_the_certificate_itself_drops_it(world: World, code: str) -> None:
    calls: list[str] = []
    directory = directory_of(world, calls)

    async def scenario() -> tuple[list[str], list[bool]]:
        answers: list[str] = []
        resent_with_it: list[bool] = []
        for attempt in range(3):  # three handshakes (each a new step 1): the gateway answers the one with the certificate `code`
            sid = bytes([attempt]) * 16

            async def send(certificate: Any | None) -> Any:
                if certificate is None:
                    raise GatewayError("policy_denied", ROUTE_DENIED)
                raise GatewayError(code, "answered the step 1 carrying the certificate")  # type: ignore[arg-type]

            with pytest.raises(GatewayError) as error:
                await directory.relay("alice", sid, send)
            answers.append(error.value.code)
            resent_with_it.append(directory.attached(sid) is not None)  # what the step 1's resend would carry
            directory.handshake_over(sid)
        # A resend of a step 1 that carried it (bound), refused `code` again.
        sid = b"\x09" * 16
        directory._bind(sid, world.identity("alice").certificate)

        async def refuse(certificate: Any | None) -> Any:
            assert certificate is not None
            raise GatewayError(code, "answered the resend")  # type: ignore[arg-type]

        with pytest.raises(GatewayError):
            await directory.relay("alice", sid, refuse)
        resent_with_it.append(directory.attached(sid) is not None)
        await directory.close()
        return answers, resent_with_it

    answers, resent_with_it = run(scenario)
    assert answers == [code] * 3
    if code in CERTIFICATE_REFUSALS:
        assert len(calls) == 3 and resent_with_it == [False] * 4  # asked again each time
    else:
        assert len(calls) == 1 and resent_with_it == [True] * 4  # kept: the retries read no registry


def test_a_lookup_that_fails_for_now_is_a_first_contact_event_each_time(world: World) -> None:
    events: list[Event] = []
    registry = FakeRegistry(world)
    registry.register(world.identity("alice"))
    registry.down = True
    bob = sender(world, events, registry, resend=ResendPolicy(initial_s=0.2, max_s=0.4))

    async def scenario() -> None:
        connect_to(bob, IntroducingGateway(known={"bob"}))
        sending = asyncio.ensure_future(bob.send("alice", MessageType.STATUS_UPDATE, {"n": 1}, timeout=30))
        await wait_for(lambda: len(registry.calls) >= 2)
        reported = [e.fields for e in events if e.kind == "first_contact"]
        assert len(reported) >= 2 and {(f["peer"], f["code"]) for f in reported} == {("alice", "unavailable")}
        assert "registry lookup" in reported[0]["detail"] and "unreachable" in reported[0]["detail"]
        assert not settled(events) and bob.pending() == 1
        sending.cancel()
        await bob.close()

    run(scenario)


@pytest.mark.parametrize("failure", ["timeout", "not_yet_valid"])
def test_a_lookup_timeout_or_a_certificate_not_valid_yet_is_reported_with_its_code(world: World, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    import parley.directory as directory_module

    monkeypatch.setattr(directory_module, "LOOKUP_TIMEOUT_S", 0.05)
    reported: list[tuple[str, str, str]] = []
    alice = world.identity("alice")

    async def get_agent(peer: str) -> Any:
        if failure == "timeout":
            await asyncio.sleep(1)
        return registry_pb2.AgentRecord(agent_id=peer, status=registry_pb2.AGENT_STATUS_ACTIVE, certificate=alice.certificate)

    # not_yet_valid: the agent's clock is before the certificate's validity.
    clock = (lambda: int(alice.certificate.valid_from_ms) - 60_000) if failure == "not_yet_valid" else now_ms
    directory = FirstContact(get_agent=get_agent, trust_bundle=world.trust, on_lookup_failed=lambda *a: reported.append(a), clock=clock)

    async def scenario() -> str:
        with pytest.raises(IdentityError) as error:
            await directory.certificate_of("alice")
        await directory.close()
        return error.value.code

    code = run(scenario)
    expected = "deadline_exceeded" if failure == "timeout" else "not_yet_valid"
    assert [(p, c) for p, c, _ in reported] == [("alice", expected)]
    assert code == ("unavailable" if failure == "timeout" else "not_yet_valid")


@pytest.mark.parametrize("when", ["before", "during"])
def test_a_handshake_that_gave_up_while_its_recipient_was_looked_up_is_cancelled_not_policy_denied(world: World, when: str) -> None:
    # "before": it had given up when the refusal came (no lookup); "during": it gives up (the agent closes, …) while
    # the registry answers. Either way nothing is relayed again, and the sends waiting are not settled policy_denied.
    alice = world.identity("alice")
    calls: list[str] = []
    state = {"live": when == "during"}

    async def get_agent(peer: str) -> Any:
        calls.append(peer)
        state["live"] = False
        return registry_pb2.AgentRecord(agent_id=peer, status=registry_pb2.AGENT_STATUS_ACTIVE, certificate=alice.certificate)

    directory = FirstContact(get_agent=get_agent, trust_bundle=world.trust)

    async def scenario() -> str:
        async def send(certificate: Any | None) -> Any:
            assert certificate is None, "relayed again after the handshake gave up"
            raise GatewayError("policy_denied", ROUTE_DENIED)

        with pytest.raises(ParleyError) as error:
            await directory.relay("alice", b"\x01" * 16, send, lambda: state["live"])
        await directory.close()
        return error.value.code

    assert run(scenario) == "cancelled"
    assert calls == ([] if when == "before" else ["alice"])
