"""The site's lookup shards and the tree each ``lookup/v1`` entry commits to.

The format is defined once, in the consumer verifier (``verifier/cpl_verify.py``,
section "The signed lookup"), and used here, by ``publish`` (which logs the
commitment) and by ``audit`` (which recomputes it): the shards the site serves
are byte for byte the ones the log signed.
"""

from __future__ import annotations

from collections.abc import Iterable

from verifier.cpl_verify import LOOKUP_COMMITMENT, LOOKUP_TYPE, Lookup, model_lookup_key, parse_entry, shard_path

__all__ = ["Lookup", "lookup_files", "model_lookup_key", "shard_path"]


def lookup_files(entries: Iterable[bytes]) -> dict[str, bytes]:
    """Every shard and lookup tile (path under the log -> bytes) for a log's raw entries, in order, and a
    copy of the last entry when it is the commitment to them."""
    lookup = Lookup()
    last = b""
    for index, raw in enumerate(entries):
        lookup.add(index, parse_entry(raw))
        last = raw
    files = {**lookup.shard_files(), **lookup.tile_files()}
    if lookup.last_type == LOOKUP_TYPE:
        files[LOOKUP_COMMITMENT] = last
    return files
