"""The publish job and what it alone owns: git state (``gitstate``), one operation at a time on a
publication (``transaction``), and the verification of the publication's history (``history``)."""

from publisher.publish.job import (
    PublishRefused,
    PublishResult,
    check_head,
    committed_checkpoint,
    crl_entries,
    init_repository,
    publish,
)

__all__ = [
    "PublishRefused",
    "PublishResult",
    "check_head",
    "committed_checkpoint",
    "crl_entries",
    "init_repository",
    "publish",
]
