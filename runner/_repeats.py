"""Finding repeated values in a stream without keeping the stream: a fixed bit filter.

Each value's hash picks one of ``FILTER_BITS`` buckets. A bucket hit twice holds a repeated
value or two values that merely share it; callers compare the values of those few buckets
for real, in a second pass. Memory: ``FILTER_BITS / 8`` bytes (2 MiB), plus one entry per
shared bucket: about n² / 2²⁵ of them for n values (~1,200 for 200,000; 75,000 for 1.6
million), so the filter stays small up to a few million values and fills up beyond (at 10
million about 2 million buckets are shared and their values are compared for real).
"""

from __future__ import annotations

from collections.abc import Iterable

FILTER_BITS = 2**24


def bucket(value_hash: int) -> int:
    """The filter bucket of a hash."""
    return value_hash & (FILTER_BITS - 1)


def shared_buckets(hashes: Iterable[int]) -> set[int]:
    """The buckets that more than one of ``hashes`` falls into."""
    bits = bytearray(FILTER_BITS // 8)
    shared: set[int] = set()
    for value_hash in hashes:
        b = bucket(value_hash)
        byte, bit = divmod(b, 8)
        if bits[byte] >> bit & 1:
            shared.add(b)
        else:
            bits[byte] |= 1 << bit
    return shared
