"""Where the tests find the repository's vector files."""

from __future__ import annotations

import os
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = CLIENT_DIR.parent.parent
CONFORMANCE_FILE = REPO_ROOT / "docs" / "conformance" / "parley-v1.json"
TRUST_CONFORMANCE_FILE = REPO_ROOT / "docs" / "conformance" / "parley-v1-trust.json"
# The same place the TypeScript suite reads (<repo>/../shared/vectors), or PARLEY_NOISE_VECTORS.
NOISE_VECTORS = Path(os.environ.get("PARLEY_NOISE_VECTORS") or REPO_ROOT.parent / "shared" / "vectors" / "noise-xx.json")
IN_CI = os.environ.get("CI") == "true"
