"""Real registry and gateway processes for end-to-end tests (the repository's own CLIs, as
apps/gateway/test/processes.ts runs them): ``node --conditions=@parley/source --import tsx <cli.ts>``.

The registry is initialised in a temporary directory (PGlite) and served on an
ephemeral loopback port; agents are enrolled with ``agent register --json`` (the
CLI writes each key file, mode 0600); the gateway serves TLS 1.3 with a
self-signed certificate for localhost / 127.0.0.1 (openssl), follows the
registry's revocation list and uses a planner <-> worker policy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._paths import REPO_ROOT

REGISTRY_CLI = REPO_ROOT / "apps" / "registry" / "src" / "cli.ts"
GATEWAY_CLI = REPO_ROOT / "apps" / "gateway" / "src" / "cli.ts"


def have_node_toolchain() -> bool:
    return shutil.which("node") is not None and (REPO_ROOT / "node_modules" / "tsx").exists() and shutil.which("openssl") is not None


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_") and k != "DATABASE_URL"}
    env.update(extra or {})
    return env


def _cli(cli: Path) -> list[str]:
    return ["node", "--conditions=@parley/source", "--import", "tsx", str(cli)]


def run_cli(cli: Path, args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(cli) + args, cwd=REPO_ROOT, env=_env(env), capture_output=True, text=True, timeout=timeout)


@dataclass
class Running:
    """A long-running child with its output lines."""

    process: subprocess.Popen[str]
    ready: dict[str, Any]
    lines: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(cli: Path, args: list[str], env: dict[str, str], is_ready: Any, timeout: float = 90) -> Running:
    process = subprocess.Popen(_cli(cli) + args, cwd=REPO_ROOT, env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    found: dict[str, Any] = {}
    event = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if not event.is_set():
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue
                if isinstance(parsed, dict) and is_ready(parsed):
                    found.update(parsed)
                    event.set()
        event.set()

    threading.Thread(target=pump, daemon=True).start()
    if not event.wait(timeout) or not found:
        process.kill()
        process.wait()
        raise RuntimeError(f"{cli.name} not ready: {' | '.join(lines[-8:])}")
    return Running(process, found, lines)


@dataclass
class Enrolled:
    agent_id: str
    key_file: Path
    cert_file: Path
    public_key: bytes


class Deployment:
    """A registry and a TLS gateway on loopback, with helpers to enrol and revoke agents."""

    def __init__(self, workdir: Path, gateway_id: str = "gw-python.test") -> None:
        self.dir = workdir
        self.gateway_id = gateway_id
        self.registry_dir = workdir / "registry"
        self.tls_cert = workdir / "gateway-cert.pem"
        self.tls_key = workdir / "gateway-key.pem"
        self.trust_bundle = workdir / "trust-bundle.json"
        self.registry: Running | None = None
        self.gateway: Running | None = None
        self.registry_address = ""
        self.address = ""

    def start(self) -> Deployment:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(self.tls_key), "-out", str(self.tls_cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        init = run_cli(REGISTRY_CLI, ["init", "--data-dir", str(self.registry_dir), "--kdf", "interactive"])
        if init.returncode != 0:
            raise RuntimeError(f"registry init failed: {init.stderr}")
        self.registry = start(REGISTRY_CLI, ["serve", "--data-dir", str(self.registry_dir), "--listen", "127.0.0.1:0", "--heartbeat-ms", "1000"], {}, lambda l: l.get("msg") == "listening")
        self.registry_address = f"127.0.0.1:{self.registry.ready['port']}"
        bundle = self.registry_cli(["trust-bundle"])
        self.trust_bundle.write_text(bundle.stdout)
        policy = self.dir / "policy.json"
        policy.write_text(json.dumps({"version": 1, "rules": [{"from": {"agent_type": "planner"}, "to": {"agent_type": "worker"}, "bidirectional": True}]}))
        self.start_gateway()
        return self

    def stop_registry(self) -> None:
        """Stops the registry (SIGTERM); :meth:`restart_registry` serves the same data directory on the same port."""
        assert self.registry is not None
        self.registry.stop()

    def restart_registry(self) -> None:
        port = self.registry_address.rsplit(":", 1)[1]
        self.registry = start(REGISTRY_CLI, ["serve", "--data-dir", str(self.registry_dir), "--listen", f"127.0.0.1:{port}", "--heartbeat-ms", "1000"], {}, lambda l: l.get("msg") == "listening")

    def start_gateway(self, listen: str = "127.0.0.1:0") -> None:
        env = {
            "PARLEY_GATEWAY_ID": self.gateway_id,
            "PARLEY_GATEWAY_LISTEN": listen,
            "PARLEY_GATEWAY_TLS_CERT": str(self.tls_cert),
            "PARLEY_GATEWAY_TLS_KEY": str(self.tls_key),
            "PARLEY_GATEWAY_METRICS_LISTEN": "off",
            "PARLEY_GATEWAY_AUDIT_KEY": str(self.dir / "audit-key.json"),
            "PARLEY_GATEWAY_REGISTRY": self.registry_address,
            "PARLEY_GATEWAY_TRUST_BUNDLE": str(self.trust_bundle),
            "PARLEY_GATEWAY_POLICY": str(self.dir / "policy.json"),
            "PARLEY_GATEWAY_LOG_LEVEL": "warn",
            "PARLEY_GATEWAY_DATA_DIR": str(self.dir / "gateway-pgdata"),
        }
        self.gateway = start(GATEWAY_CLI, ["serve"], env, lambda l: l.get("ready") is True and l.get("revocations_synced") is True)
        self.address = str(self.gateway.ready["address"])

    def registry_cli(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        result = run_cli(REGISTRY_CLI, args + ["--data-dir", str(self.registry_dir), "--server", self.registry_address])
        if result.returncode != 0:
            raise RuntimeError(f"registry {' '.join(args[:2])} failed: {result.stderr}")
        return result

    def enrol(self, agent_id: str, agent_type: str) -> Enrolled:
        out = self.registry_cli(["agent", "register", agent_id, "--type", agent_type, "--json"]).stdout
        doc = json.loads(out)
        cert_file = self.dir / f"{agent_id}.cert.json"
        cert_file.write_text(out)
        import base64

        pk = base64.urlsafe_b64decode(doc["certificate"]["identity_public_key"] + "==")
        return Enrolled(agent_id, Path(doc["key_file"]), cert_file, pk)

    def revoke(self, agent_id: str) -> None:
        self.registry_cli(["agent", "revoke", agent_id, "--reason", "key-compromise"])

    def stop(self) -> None:
        for child in (self.gateway, self.registry):
            if child is not None:
                child.stop()


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
