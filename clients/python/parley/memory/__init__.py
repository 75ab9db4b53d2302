"""Shared memory (docs/PROTOCOL.md §18): ``agent.memory`` (:class:`MemoryClient`), end to end encrypted.

The gateway stores ciphertext and enforces the member list; it never holds a key. The layouts,
the membership log rules and the records are exported for tools and conformance checks.
"""

from .client import MemoryClient, MemoryInfo, MemoryKeyFault, MemoryListing, MemoryMemberInfo, MemoryUsageInfo, ReadResult, SegmentInfo, WriteResult
from .names import AccessLevel

__all__ = [
    "AccessLevel",
    "MemoryClient",
    "MemoryInfo",
    "MemoryKeyFault",
    "MemoryListing",
    "MemoryMemberInfo",
    "MemoryUsageInfo",
    "ReadResult",
    "SegmentInfo",
    "WriteResult",
]
