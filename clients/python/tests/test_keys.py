"""Key files (§15.2), certificates and trust bundles (§3.3), as the registry CLI writes them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from parley import crypto
from parley.encoding import b64url_encode
from parley.errors import ParleyError
from parley.identity import TrustBundle, key_id
from parley.keys import load_certificate, load_identity, load_key_file, sealed_key_ad

from .helpers import World


def key_file(path: Path, key: crypto.SigningKey, *, mode: int = 0o600, **overrides: object) -> Path:
    doc = {"version": 1, "type": "parley-agent-key", "key_id": key_id(key.public_key).hex(), "public_key": b64url_encode(key.public_key), "created_at_ms": 1, "seed": b64url_encode(key.seed())}
    doc.update(overrides)
    path.write_text(json.dumps(doc))
    os.chmod(path, mode)
    return path


def test_plain_key_file(tmp_path: Path) -> None:
    key = crypto.SigningKey.generate()
    loaded = load_key_file(key_file(tmp_path / "k.json", key))
    assert loaded.public_key == key.public_key


@pytest.mark.parametrize(
    "overrides,code",
    [
        ({"version": 2}, "malformed"),
        ({"type": "parley-operator-key"}, "malformed"),
        ({"key_id": "00" * 16}, "malformed"),
        ({"seed": b64url_encode(bytes(32))}, "malformed"),
        ({"seed": "not base64!"}, "malformed"),
        ({"public_key": b64url_encode(bytes(31))}, "malformed"),
    ],
)
def test_bad_key_files(tmp_path: Path, overrides: dict[str, object], code: str) -> None:
    with pytest.raises(ParleyError) as e:
        load_key_file(key_file(tmp_path / "k.json", crypto.SigningKey.generate(), **overrides))
    assert e.value.code == code


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParleyError) as e:
        load_key_file(key_file(tmp_path / "k.json", crypto.SigningKey.generate(), mode=0o640))
    assert e.value.code == "permission_denied"
    with pytest.raises(ParleyError) as missing:
        load_key_file(tmp_path / "none.json")
    assert missing.value.code == "not_found"


def test_sealed_key_file(tmp_path: Path) -> None:
    # Sealed here with the §15.2 layout; tests/test_e2e_gateway.py also opens one the registry CLI sealed.
    key = crypto.SigningKey.generate()
    salt = crypto.random_bytes(16)
    k = crypto.argon2id(b"correct horse", salt, 1, 8192)
    ciphertext = crypto.aead_encrypt(k, 0, sealed_key_ad("parley-agent-key", key.public_key), key.seed())
    sealed = {"kdf": "argon2id", "ops_limit": 1, "mem_limit": 8192, "salt": b64url_encode(salt), "ciphertext": b64url_encode(ciphertext)}
    path = key_file(tmp_path / "k.json", key, sealed=sealed)
    doc = json.loads(path.read_text())
    del doc["seed"]
    path.write_text(json.dumps(doc))
    assert load_key_file(path, passphrase="correct horse").public_key == key.public_key
    for wrong in ("wrong", None):
        with pytest.raises(ParleyError) as e:
            load_key_file(path, passphrase=wrong)
        assert e.value.code == "permission_denied"
    doc["sealed"]["ops_limit"] = 17  # above §15.2's range: refused before any work
    path.write_text(json.dumps(doc))
    with pytest.raises(ParleyError) as e:
        load_key_file(path, passphrase="correct horse")
    assert e.value.code == "malformed"


def test_certificates_and_identity(tmp_path: Path) -> None:
    world = World()
    me = world.identity("worker-1")
    encoded = b64url_encode(me.certificate.SerializeToString())
    (tmp_path / "c.json").write_text(json.dumps({"agent_id": "worker-1", "certificate": {"encoded": encoded}, "key_file": "x"}))
    (tmp_path / "c.txt").write_text(encoded + "\n")
    assert load_certificate(tmp_path / "c.json").agent_id == "worker-1"
    assert load_certificate(tmp_path / "c.txt").SerializeToString() == me.certificate.SerializeToString()
    key = key_file(tmp_path / "k.json", me.signing_key)
    assert load_identity(key, tmp_path / "c.json").agent_id == "worker-1"
    other = key_file(tmp_path / "o.json", crypto.SigningKey.generate())
    with pytest.raises(ParleyError) as e:
        load_identity(other, tmp_path / "c.json")
    assert e.value.code == "identity_mismatch"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ParleyError):
        load_certificate(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "doc,code",
    [
        ({"version": 2, "issuers": []}, "unsupported_version"),
        ({"version": 1, "issuers": [], "extra": 1}, "malformed"),
        ({"version": 1}, "malformed"),
        ("not json", "malformed"),
    ],
)
def test_trust_bundle_json_is_strict(doc: object, code: str) -> None:
    with pytest.raises(ParleyError) as e:
        TrustBundle.from_json(doc if isinstance(doc, str) else json.dumps(doc))
    assert e.value.code == code


def test_trust_bundle_entries_are_checked() -> None:
    issuer = crypto.SigningKey.generate()
    good = {"key_id": key_id(issuer.public_key).hex(), "public_key": b64url_encode(issuer.public_key)}
    assert len(TrustBundle.from_json({"version": 1, "issuers": [good]})) == 1
    for bad in (
        {**good, "key_id": "00" * 16},
        {**good, "key_id": good["key_id"].upper()},
        {**good, "public_key": good["public_key"] + "="},
        {**good, "not_after_ms": -1},
        {**good, "not_after_ms": True},
        {**good, "other": 1},
    ):
        with pytest.raises(ParleyError):
            TrustBundle.from_json({"version": 1, "issuers": [bad]})
    with pytest.raises(ParleyError):
        TrustBundle.from_json({"version": 1, "issuers": [good, good]})
    bounded = TrustBundle.from_json({"version": 1, "issuers": [{**good, "not_after_ms": 0}]})
    assert bounded.issuers()[0].not_after_ms == 0 and bounded.to_json()["issuers"][0]["not_after_ms"] == 0
