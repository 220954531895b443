"""C2SP tlog-tiles layout: tile paths, tile arithmetic and entry bundles.

Pure logic. Tile height is fixed at 8 (256 hashes per full tile). A hash at
level ``l`` is the root of a complete subtree of ``256**l`` leaves.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .merkle import EMPTY_ROOT, HASH_SIZE, HashRange, node_hash, root_of, split_point

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256
MAX_ENTRY_SIZE = 0xFFFF
MAX_LEVEL = 63
_U16 = struct.Struct(">H")


class TileError(ValueError):
    """A tile path, tile or entry bundle is malformed."""


class EntryTooLarge(TileError):
    """An entry does not fit the uint16 length prefix of an entry bundle."""


@dataclass(frozen=True, order=True)
class Tile:
    """A hash tile (``level >= 0``) or, with ``level == -1``, an entry bundle."""

    level: int
    index: int
    width: int  # 1..256; 256 means full

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def path(self) -> str:
        """Path relative to the log prefix, e.g. ``tile/0/x001/234.p/7``."""
        level = "entries" if self.level < 0 else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    def as_full(self) -> Tile:
        return Tile(self.level, self.index, TILE_WIDTH)


def encode_index(n: int) -> str:
    """Tile index as 3-digit groups, all but the last prefixed ``x``: 1234067 -> x001/x234/067."""
    if n < 0:
        raise TileError(f"negative tile index {n}")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


_PATH_RE = re.compile(r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


def parse_path(path: str) -> Tile:
    """Inverse of ``Tile.path``; strict (no leading zeros, widths 1..255)."""
    m = _PATH_RE.fullmatch(path)
    if not m:
        raise TileError(f"not a tile path: {path!r}")
    level = -1 if m.group(1) == "entries" else int(m.group(1))
    if level > MAX_LEVEL:
        raise TileError(f"tile level {level} is above {MAX_LEVEL}")
    groups = m.group(2).split("/")
    if len(groups) > 1 and groups[0] == "x000":
        raise TileError(f"tile index has a leading zero group: {path!r}")
    index = int("".join(g.lstrip("x") for g in groups))
    width = TILE_WIDTH
    if m.group(3) is not None:
        width = int(m.group(3))
        if width >= TILE_WIDTH:
            raise TileError(f"partial tile width {width} must be below {TILE_WIDTH}")
    return Tile(level, index, width)


def level_width(size: int, level: int) -> int:
    """Number of hashes the tree of ``size`` leaves has at tile level ``level``."""
    return size >> (TILE_HEIGHT * level)


def tile_for(level: int, index: int, size: int) -> Tile:
    """The tile ``(level, index)`` as it stands in a tree of ``size`` leaves."""
    lvl = max(level, 0)
    count = level_width(size, lvl) - index * TILE_WIDTH
    if count <= 0:
        raise TileError(f"tile {level}/{index} is empty in a tree of size {size}")
    return Tile(level, index, min(count, TILE_WIDTH))


def right_edge(size: int) -> list[Tile]:
    """The partial tiles a tree of ``size`` leaves implies, one per level that has one."""
    tiles = []
    level = 0
    while level_width(size, level) > 0:
        count = level_width(size, level)
        if count % TILE_WIDTH:
            tiles.append(Tile(level, count // TILE_WIDTH, count % TILE_WIDTH))
        level += 1
    return tiles


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


def split_hashes(data: bytes, tile: Tile) -> list[bytes]:
    """The hashes of a hash tile's bytes, checking the length matches its width."""
    if len(data) != tile.width * HASH_SIZE:
        raise TileError(f"{tile.path}: {len(data)} bytes, expected {tile.width * HASH_SIZE}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: list[bytes]) -> bytes:
    """Entry bundle bytes: each entry as big-endian uint16 length || bytes."""
    try:
        return b"".join(_U16.pack(len(e)) + e for e in entries)
    except struct.error:
        i, size = next((i, len(e)) for i, e in enumerate(entries) if len(e) > MAX_ENTRY_SIZE)
        limit = MAX_ENTRY_SIZE
        raise EntryTooLarge(f"entry {i} is {size} bytes; a tlog-tiles entry is at most {limit} bytes") from None


def decode_bundle(data: bytes, expected: int | None = None, name: str = "entry bundle") -> list[bytes]:
    """Split an entry bundle into its entries; strict about truncation and count."""
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise TileError(f"{name}: truncated length prefix at byte {pos}")
        (n,) = _U16.unpack_from(data, pos)
        pos += 2
        if pos + n > len(data):
            raise TileError(f"{name}: entry {len(entries)} is truncated")
        entries.append(data[pos : pos + n])
        pos += n
    if expected is not None and len(entries) != expected:
        raise TileError(f"{name}: holds {len(entries)} entries, expected {expected}")
    return entries


#: ``read_tile(tile)`` returns the hashes of ``tile`` (exactly ``tile.width`` of them).
TileReader = Callable[[Tile], list[bytes]]


def tile_hash_range(size: int, read_tile: TileReader) -> HashRange:
    """A ``HashRange`` for a tree of ``size`` leaves whose hashes come from tiles.

    A complete, aligned subtree of height ``h`` is read from the tile at level
    ``h // 8`` (hashing ``2**(h % 8)`` stored hashes); any other range is split
    as in RFC 9162, so only the tiles on the proof's path are read.
    """

    def complete(start: int, height: int) -> bytes:
        level, sub = divmod(height, TILE_HEIGHT)
        pos = start >> (TILE_HEIGHT * level)  # index among level-`level` hashes
        count = 1 << sub
        index = pos // TILE_WIDTH
        hashes = read_tile(tile_for(level, index, size))
        offset = pos % TILE_WIDTH
        return root_of(hashes[offset : offset + count])

    def hash_range(start: int, end: int) -> bytes:
        if not 0 <= start < end <= size:
            raise TileError(f"range {start}..{end} is outside a tree of size {size}")
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return complete(start, n.bit_length() - 1)
        k = split_point(n)
        return node_hash(hash_range(start, start + k), hash_range(start + k, end))

    return hash_range


def root_from_right_edge(size: int, edge: dict[int, list[bytes]]) -> bytes:
    """Tree root from the right-edge hashes of every level (``edge[level]`` = partial tile hashes).

    The tree is the right fold of its perfect subtrees, largest first; the
    partial tile at each level contributes the perfect subtrees of its width.
    """
    if size == 0:
        return EMPTY_ROOT
    subtrees: list[bytes] = []
    for level in sorted(edge, reverse=True):
        hashes = edge[level]
        pos = 0
        while pos < len(hashes):
            k = 1 << ((len(hashes) - pos).bit_length() - 1)
            subtrees.append(root_of(hashes[pos : pos + k]))
            pos += k
    acc = subtrees.pop()
    while subtrees:
        acc = node_hash(subtrees.pop(), acc)
    return acc
