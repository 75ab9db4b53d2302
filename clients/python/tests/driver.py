"""A Python agent driven over stdin/stdout, for process-level tests (apps/gateway/test/load/python-agent.spec.ts
and tests/test_e2e_gateway.py). It is a real agent (``parley.connect``) with a real state directory;
the test decides what it sends and when it acks, and may SIGKILL it at any point.

stdin, one JSON command per line:
    {"cmd": "send", "id": "s1", "to": "ts-1", "type": "TASK_ASSIGNMENT", "content": {...}, "timeout": 30}
    {"cmd": "ack", "message_hash": "<hex>"}
    {"cmd": "memory", "id": "m1", "op": "create" | "get" | "list" | "read" | "write" | "grant" | "revoke" | "open", ...}
        (arguments: memory_id, segment_id, data (text), previous_version, agent_id, access, expires_at_ms,
        record and ciphertext (hex, for "open": verify and decrypt offline with the keys held))
    {"cmd": "exit"}
stdout, one JSON event per line:
    {"event": "ready", "agent_id": ..., "blake3": ...}
    {"event": "received", "from", "type", "content", "message_hash", "redelivered", "envelope": <hex>}
    {"event": "receipt", "id", "message_hash", "recipient_id", "received_at_ms", "signature", "verified": true}
    {"event": "send_failed", "id", "code", "detail"}
    {"event": "acked", "message_hash", "signature"}
    {"event": "memory", "id", "ok": true, ...the result} or {"event": "memory", "id", "ok": false, "code", "detail", "current_version"}
    {"event": <an SDK Event kind>, ...its fields}          (security, duplicate, session_established, …)

Usage: python3 driver.py --gateway H:P --gateway-id ID --key F --cert F --trust-bundle F --state-dir D
       [--tls-ca PEM] [--auto-ack] [--registry H:P] [--revoked AGENT_ID]... [--send-timeout S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import parley  # noqa: E402
import parley.v1.memory_pb2  # noqa: E402


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: object) -> object:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, parley.Receipt):
        return {"message_hash": value.message_hash.hex(), "recipient_id": value.recipient_id}
    return str(value)


def info(i: parley.MemoryInfo) -> dict[str, Any]:
    return {
        "memory_id": i.memory_id,
        "owner_id": i.owner_id,
        "access": i.access,
        "members": [[m.agent_id, m.access] for m in i.members],
        "membership_version": i.membership_version,
        "current_epoch": i.current_epoch,
    }


def read_result(r: parley.ReadResult) -> dict[str, Any]:
    return {
        "data": r.text(),
        "version": r.version,
        "writer_id": r.writer_id,
        "key_epoch": r.info.key_epoch,
        "record": r.record.SerializeToString().hex(),
        "ciphertext": r.ciphertext.hex(),
    }


async def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--gateway-id", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--trust-bundle", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--tls-ca")
    p.add_argument("--auto-ack", action="store_true")
    p.add_argument("--registry")
    p.add_argument("--revoked", action="append", default=[])
    p.add_argument("--send-timeout", type=float, default=30.0)
    args = p.parse_args()

    trust = parley.TrustBundle.from_file(args.trust_bundle)
    revocations: Any = None
    registry: parley.RegistryRevocations | None = None
    if args.registry:
        registry = parley.RegistryRevocations(args.registry, trust, refresh_ms=500)
        await registry.start()
        revocations = registry
    elif args.revoked:
        revocations = parley.StaticRevocations(agent_ids=set(args.revoked))
    agent = await parley.connect(
        gateway=args.gateway,
        identity=parley.load_identity(args.key, args.cert),
        trust_bundle=trust,
        expected_gateway_id=args.gateway_id,
        tls=parley.TlsConfig(root_certificates=args.tls_ca) if args.tls_ca else None,
        state_dir=args.state_dir,
        revocations=revocations,
        send_timeout=args.send_timeout,
        on_event=lambda e: emit(e.kind, **{k: v for k, v in e.fields.items() if k != "receipt"}),
    )
    emit("ready", agent_id=agent.agent_id, blake3=parley.BLAKE3_BACKEND)
    unacked: dict[str, parley.Message] = {}
    peer_keys: dict[str, bytes] = {}

    async def receive() -> None:
        async for msg in agent.messages():
            if msg.sender_certificate is not None:
                peer_keys[msg.sender] = bytes(msg.sender_certificate.identity_public_key)
            emit(
                "received",
                **{"from": msg.sender},
                type=msg.type.wire_name,
                content=msg.content,
                message_hash=msg.message_hash.hex(),
                redelivered=msg.redelivered,
                envelope=msg.envelope.SerializeToString().hex(),
            )
            if args.auto_ack:
                receipt = await msg.ack()
                emit("acked", message_hash=msg.message_hash.hex(), signature=receipt.signature.hex())
            else:
                unacked[msg.message_hash.hex()] = msg

    async def send(cmd: dict[str, Any]) -> None:
        try:
            receipt = await agent.send(cmd["to"], parley.MessageType[cmd["type"]], cmd.get("content"), timeout=cmd.get("timeout"))
            session = next((s for s in agent.sessions() if s.peer_id == cmd["to"]), None)
            key = session.peer.identity_public_key if session else b""
            emit(
                "receipt",
                id=cmd.get("id"),
                message_hash=receipt.message_hash.hex(),
                recipient_id=receipt.recipient_id,
                sender_id=receipt.sender_id,
                received_at_ms=receipt.received_at_ms,
                signature=receipt.signature.hex(),
                verified=bool(key) and receipt.verify(key),
            )
        except parley.ParleyError as error:
            emit("send_failed", id=cmd.get("id"), code=error.code, detail=error.detail)

    async def memory(cmd: dict[str, Any]) -> None:
        m = agent.memory
        op = cmd.get("op")
        try:
            result: dict[str, Any]
            if op == "create":
                result = info(await m.create(expires_at_ms=cmd.get("expires_at_ms")))
            elif op == "get":
                result = info(await m.get(cmd["memory_id"]))
            elif op == "list":
                result = {"memories": [x.memory_id for x in await m.list()]}
            elif op == "grant":
                result = info(await m.grant(cmd["memory_id"], cmd["agent_id"], cmd["access"], expires_at_ms=cmd.get("expires_at_ms")))
            elif op == "revoke":
                result = info(await m.revoke(cmd["memory_id"], cmd["agent_id"]))
            elif op == "write":
                w = await m.write(cmd["memory_id"], cmd["segment_id"], cmd["data"], previous_version=cmd["previous_version"])
                result = {"version": w.version, "already_applied": w.already_applied}
            elif op == "read":
                result = read_result(await m.read(cmd["memory_id"], cmd["segment_id"]))
            elif op == "open":
                record = parley.v1.memory_pb2.WriteRecord.FromString(bytes.fromhex(cmd["record"]))
                result = read_result(m.open(cmd["memory_id"], record, bytes.fromhex(cmd["ciphertext"])))
            else:
                raise parley.ParleyError("malformed", f"unknown memory op {op!r}")
            emit("memory", id=cmd.get("id"), ok=True, **result)
        except parley.ParleyError as error:
            emit("memory", id=cmd.get("id"), ok=False, code=error.code, detail=error.detail, current_version=getattr(error, "current_version", None))

    receiver = asyncio.ensure_future(receive())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Future[Any]] = set()
    code = 0
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            cmd = json.loads(line)
        except ValueError:
            continue
        if cmd.get("cmd") == "send":
            t = asyncio.ensure_future(send(cmd))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        elif cmd.get("cmd") == "ack":
            msg = unacked.pop(cmd["message_hash"], None)
            if msg is not None:
                receipt = await msg.ack()
                emit("acked", message_hash=msg.message_hash.hex(), signature=receipt.signature.hex())
        elif cmd.get("cmd") == "memory":
            t = asyncio.ensure_future(memory(cmd))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        elif cmd.get("cmd") == "exit":
            break
    for t in list(tasks):
        t.cancel()
    await agent.close()
    receiver.cancel()
    if registry is not None:
        await registry.close()
    emit("closed")
    return code


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
