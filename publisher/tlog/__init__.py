"""The transparency log engine: RFC 9162 hashing and proofs (``merkle``), C2SP tiles (``tiles``), signed
notes and checkpoints (``note``, ``checkpoint``), the log signer (``signer``) and the log itself
(``engine``). This facade names what the rest of the publisher uses, and opens a publication's log."""

from publisher.config import Config
from publisher.publication import LOG_DIR
from publisher.tlog.engine import PENDING_FILE, STATE_FILE, CorruptLog, LogError, LogReader, TileLog, read_vkey
from publisher.tlog.note import Signer
from publisher.tlog.signer import load_log_signer

__all__ = [
    "PENDING_FILE",
    "STATE_FILE",
    "CorruptLog",
    "LogError",
    "LogReader",
    "TileLog",
    "open_log",
    "open_log_for_writing",
    "read_vkey",
]


def open_log(config: Config) -> LogReader:
    """The publication's log, read at its checkpoint with its own published key."""
    log_dir = config.root / LOG_DIR
    return LogReader(log_dir, config.origin, [read_vkey(log_dir)])


def open_log_for_writing(config: Config, signer: Signer | None = None) -> TileLog:
    """The publication's log with its configured signing key, or ``signer`` when the caller loaded it already
    (a context manager: its writer's lock)."""
    return TileLog.open(config.root / LOG_DIR, signer or load_log_signer(config.log_key, config.root, config.origin))
