"""Noise Protocol Framework, revision 34, for ``Noise_XX_25519_ChaChaPoly_BLAKE2b``.

Files and names follow the specification: :class:`CipherState` (§5.1),
:class:`SymmetricState` (§5.2), :class:`HandshakeState` (§5.3); the pattern and
functions are data (:mod:`.protocol`). Checked against the cacophony and snow
vectors in ``/work/shared/vectors/noise-xx.json`` (``tests/test_noise.py``).
"""

from .cipher_state import MAX_NONCE, CipherState
from .handshake_state import HandshakeResult, HandshakeState
from .protocol import MAX_MESSAGE_BYTES, PARLEY_NOISE_PROTOCOL, NoiseProtocol, parse_protocol_name
from .symmetric_state import SymmetricState

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_NONCE",
    "PARLEY_NOISE_PROTOCOL",
    "CipherState",
    "HandshakeResult",
    "HandshakeState",
    "NoiseProtocol",
    "SymmetricState",
    "parse_protocol_name",
]
