"""Cost of one 1 KiB message, seal + open (with commit), in the Python SDK; one JSON line per run.

Run by bench/compare.ts beside the TypeScript SDK in the same run (``npm run bench``), or alone:
``/usr/bin/python3 clients/python/bench/seal_open.py --round-ms 1000``.

Reports the figure with the BLAKE3 backend in use and, measured in the same
loop, the time spent inside BLAKE3 (what the ``blake3`` package would mostly
save when the pure-Python fallback is in use). When the ``blake3`` package is
installed, the fallback is measured too, for the "with and without" comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from parley import crypto  # noqa: E402
from parley._blake3_fallback import blake3 as fallback_blake3  # noqa: E402
from parley.envelope import encode_payload  # noqa: E402
from parley.handshake import HandshakeConfig, InitiatorHandshake, ResponderHandshake  # noqa: E402
from parley.identity import TrustBundle, issue_certificate  # noqa: E402
from parley.session import LocalIdentity, Session, now_ms  # noqa: E402

CONTENT = {"data": "x" * 1000}  # encodes to a ~1 KiB MessagePayload


def sessions() -> tuple[Session, Session]:
    issuer = crypto.SigningKey.generate()
    trust = TrustBundle.from_public_keys(issuer.public_key)
    now = now_ms()

    def identity(agent_id: str) -> LocalIdentity:
        key = crypto.SigningKey.generate()
        cert = issue_certificate(issuer, agent_id=agent_id, identity_public_key=key.public_key, agent_type="worker", valid_from_ms=now - 60_000, valid_until_ms=now + 86_400_000, serial=crypto.random_bytes(16))
        return LocalIdentity(agent_id, key, cert)

    a, b = HandshakeConfig(identity("bench-a"), trust), HandshakeConfig(identity("bench-b"), trust)
    init, f1 = InitiatorHandshake.start(a, "bench-b")
    resp, f2 = ResponderHandshake.accept(b, f1)
    f3, sa = init.receive(f2)
    return sa, resp.receive(f3)


def one_round(round_ms: float) -> dict[str, Any]:
    a, b = sessions()
    payload_bytes = len(encode_payload(5, CONTENT, now_ms()))
    hashing = [0.0]
    real = crypto.blake3

    def timed(data: bytes) -> bytes:
        t0 = time.perf_counter()
        try:
            return real(data)
        finally:
            hashing[0] += time.perf_counter() - t0

    def op() -> None:
        ts = now_ms()  # encoding the payload is part of sealing, as in the TypeScript SDK's seal()
        sealed = a.seal_at(a.allocate_counter(), encode_payload(5, CONTENT, ts), ts)
        b.open(sealed.envelope).commit()

    for _ in range(3):  # warm-up
        op()
    crypto.blake3 = timed  # type: ignore[assignment]
    try:
        n = 0
        start = time.perf_counter()
        deadline = start + round_ms / 1000
        while time.perf_counter() < deadline:
            op()
            n += 1
        elapsed = time.perf_counter() - start
    finally:
        crypto.blake3 = real  # type: ignore[assignment]
    return {"us_per_op": elapsed / n * 1e6, "ops": n, "blake3_us_per_op": hashing[0] / n * 1e6, "payload_bytes": payload_bytes}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--round-ms", type=float, default=1000)
    args = p.parse_args()
    result = {"backend": crypto.BLAKE3_BACKEND, **one_round(args.round_ms)}
    if crypto.BLAKE3_BACKEND == "blake3":  # measure the fallback too, in the same process
        saved = crypto._blake3
        crypto._blake3 = lambda data: fallback_blake3(data, 32)  # type: ignore[assignment]
        try:
            result["fallback"] = one_round(args.round_ms)
        finally:
            crypto._blake3 = saved  # type: ignore[assignment]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
