"""Text encodings used in files and metadata: unpadded base64url (RFC 4648 §5) and hex, both strict."""

from __future__ import annotations

import base64
import re
from typing import Final

from .errors import ParleyError

_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str = "value") -> bytes:
    """Decodes canonical unpadded base64url; anything else (padding, other alphabets, stray bits) is ``malformed``."""
    if not isinstance(text, str) or _B64URL_RE.fullmatch(text) is None or len(text) % 4 == 1:
        raise ParleyError("malformed", f"{what} is not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:
        raise ParleyError("malformed", f"{what} is not canonical base64url")
    return data
