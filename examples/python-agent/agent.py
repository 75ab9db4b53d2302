"""A Python planner and a Python worker talking through a Parley gateway.

The planner hands the worker a task; the worker acknowledges it (which signs
the delivery receipt the planner is waiting for), works on it and reports
back; the planner acknowledges the report. Every send resolves with the
recipient's verified, signed receipt.

    examples/python-agent/run.sh            # against `npm start`'s gateway (see README.md)
    /usr/bin/python3 examples/python-agent/agent.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python"))

import parley  # noqa: E402
from parley import MessageType  # noqa: E402


def show(who: str, text: str) -> None:
    print(f"  {who:<10} {text}", flush=True)


async def worker(agent: parley.Agent) -> None:
    """Acks each task, then reports progress on it."""
    async for msg in agent.messages():
        show(agent.agent_id, f"received {msg.type.name} from {msg.sender}: {msg.content}")
        await msg.ack()  # signs the receipt the planner waits for
        report = {"task": msg.content["task"] if isinstance(msg.content, dict) else None, "state": "done", "note": "résumé écrit ✓"}
        receipt = await agent.send(msg.sender, MessageType.STATUS_UPDATE, report, parent_message_hash=msg.message_hash)
        show(agent.agent_id, f"report receipted by {receipt.recipient_id} at {receipt.received_at_ms} (signature verified)")
        return


async def planner(agent: parley.Agent, worker_id: str) -> None:
    task = {"task": "summarise-incident-reports", "inputs": ["incidents/2026-q3.jsonl"], "deadline_minutes": 60}
    receipt = await agent.send(worker_id, MessageType.TASK_ASSIGNMENT, task)
    show(agent.agent_id, f"task {receipt.message_hash.hex()[:16]}… receipted by {receipt.recipient_id} (signature verified)")
    async for msg in agent.messages():
        show(agent.agent_id, f"received {msg.type.name} from {msg.sender}: {msg.content}")
        assert msg.parent_message_hash == receipt.message_hash
        await msg.ack()
        return


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", required=True, help="host:port of the gateway")
    p.add_argument("--gateway-id", required=True, help="the id the gateway must prove (npm start: parley-demo)")
    p.add_argument("--trust-bundle", required=True, help="the pinned issuer keys (parley-registry trust-bundle)")
    p.add_argument("--planner", nargs=2, metavar=("KEY", "CERT"), required=True, help="key file and `agent register --json` output")
    p.add_argument("--worker", nargs=2, metavar=("KEY", "CERT"), required=True)
    p.add_argument("--state-dir", required=True, help="where each agent keeps its outbox, inbox and sessions")
    p.add_argument("--tls-ca", help="PEM CA of the gateway's TLS certificate (omit for plaintext on loopback)")
    args = p.parse_args()

    def connect(keys: list[str], name: str) -> "asyncio.Future[parley.Agent]":
        return asyncio.ensure_future(
            parley.connect(
                gateway=args.gateway,
                identity=parley.load_identity(keys[0], keys[1]),
                trust_bundle=args.trust_bundle,
                expected_gateway_id=args.gateway_id,
                tls=parley.TlsConfig(root_certificates=args.tls_ca) if args.tls_ca else None,
                state_dir=Path(args.state_dir) / name,
            )
        )

    print(f"Parley Python agents (BLAKE3: {parley.BLAKE3_BACKEND}) via {args.gateway}", flush=True)
    p_agent, w_agent = await asyncio.gather(connect(args.planner, "planner"), connect(args.worker, "worker"))
    try:
        await asyncio.wait_for(asyncio.gather(worker(w_agent), planner(p_agent, w_agent.agent_id)), 60)
    except parley.ParleyError as error:
        print(f"failed: {error}", file=sys.stderr)
        return 1
    finally:
        await p_agent.close()
        await w_agent.close()
    print("done: two messages, two verified receipts", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
