"""The site's lookup shards and the tree each ``lookup/v1`` entry commits to.

The format is defined once, in the consumer verifier (``verifier/cpl_verify.py``,
section "The signed lookup"), and used here, by ``publish`` (which logs the
commitment) and by ``audit`` (which recomputes it): the shards the site serves
are byte for byte the ones the log signed.
"""

from __future__ import annotations

from collections.abc import Iterable

from verifier.cpl_verify import Lookup, model_lookup_key, parse_entry, shard_path

__all__ = ["Lookup", "lookup_files", "model_lookup_key", "shard_path"]


def lookup_files(entries: Iterable[bytes]) -> dict[str, bytes]:
    """Every shard and lookup tile (path under the log -> bytes) for a log's raw entries, in order."""
    lookup = Lookup()
    for index, raw in enumerate(entries):
        lookup.add(index, parse_entry(raw))
    return {**lookup.shard_files(), **lookup.tile_files()}
