"""C2SP tlog-tiles layout: tile paths, tile arithmetic and entry bundles.

One implementation: paths, tile arithmetic, bundle decoding and proofs
computed from tiles live in the consumer verifier (``verifier/cpl_verify.py``)
and are re-exported here; the publisher adds what only a writer needs
(bundle encoding, the tiles a tree or an append implies).

Pure logic. Tile height is fixed at 8 (256 hashes per full tile). A hash at
level ``l`` is the root of a complete subtree of ``256**l`` leaves.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from publisher.errors import Refused
from verifier.cpl_verify import (
    MAX_ENTRY_SIZE,
    MAX_LEVEL,
    TILE_HEIGHT,
    TILE_WIDTH,
    U16,
    Tile,
    TileError,
    TileReader,
    decode_bundle,
    encode_index,
    level_width,
    parse_path,
    right_edge,
    root_from_right_edge,
    split_hashes,
    tile_for,
    tile_hash_range,
)

__all__ = [
    "MAX_ENTRY_SIZE",
    "MAX_LEVEL",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "EntryTooLarge",
    "Tile",
    "TileError",
    "TileReader",
    "decode_bundle",
    "encode_bundle",
    "encode_index",
    "level_width",
    "new_tiles",
    "parse_path",
    "right_edge",
    "root_from_right_edge",
    "split_hashes",
    "tile_for",
    "tile_hash_range",
    "tiles_for_size",
]


class EntryTooLarge(TileError, Refused):
    """An entry does not fit the uint16 length prefix of an entry bundle."""


def tiles_for_size(size: int) -> Iterator[Tile]:
    """Every hash tile a tree of ``size`` leaves implies (full ones and the partials)."""
    level = 0
    while level_width(size, level) > 0:
        count = level_width(size, level)
        for index in range(count // TILE_WIDTH):
            yield Tile(level, index, TILE_WIDTH)
        if count % TILE_WIDTH:
            yield Tile(level, count // TILE_WIDTH, count % TILE_WIDTH)
        level += 1


def new_tiles(old_size: int, new_size: int) -> Iterator[Tile]:
    """Hash tiles and bundles that growing from ``old_size`` to ``new_size`` creates or grows."""
    level = 0
    while level_width(new_size, level) > 0:
        old_count, new_count = level_width(old_size, level), level_width(new_size, level)
        if new_count != old_count:
            first = old_count // TILE_WIDTH
            last = (new_count - 1) // TILE_WIDTH
            for index in range(first, last + 1):
                yield tile_for(level, index, new_size)
                if level == 0:
                    yield tile_for(-1, index, new_size)
        level += 1


def encode_bundle(entries: list[bytes]) -> bytes:
    """Entry bundle bytes: each entry as big-endian uint16 length || bytes."""
    try:
        return b"".join(U16.pack(len(e)) + e for e in entries)
    except struct.error:
        i, size = next((i, len(e)) for i, e in enumerate(entries) if len(e) > MAX_ENTRY_SIZE)
        limit = MAX_ENTRY_SIZE
        raise EntryTooLarge(f"entry {i} is {size} bytes; a tlog-tiles entry is at most {limit} bytes") from None
