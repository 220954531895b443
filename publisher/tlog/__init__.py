"""The transparency log engine: RFC 9162 hashing and proofs (``merkle``), C2SP tiles (``tiles``), signed
notes and checkpoints (``note``, ``checkpoint``), the log signer (``signer``) and the log on disk
(``engine``). This facade names what the rest of the publisher uses."""

from publisher.tlog.engine import PENDING_FILE, STATE_FILE, CorruptLog, LogError, LogReader, TileLog, read_vkey

__all__ = ["PENDING_FILE", "STATE_FILE", "CorruptLog", "LogError", "LogReader", "TileLog", "read_vkey"]
