"""The publisher's three error families. Every error the publisher raises on purpose is one of them, and
the command line maps each family to one exit code (``publisher.cli``):

* ``VerificationFailed`` (exit 1): something that must verify does not: a log, a checkpoint, a proof,
  the publication's history.
* ``Refused`` (exit 1): a request breaks a rule or cannot be taken in the publication's present state;
  nothing was changed.
* ``UsageError`` (exit 2): bad arguments, configuration or files (the operator must fix them).
"""

from __future__ import annotations


class PublisherError(Exception):
    """Any error the publisher raises on purpose."""


class VerificationFailed(PublisherError):
    """Something that must verify does not (exit 1)."""


class Refused(PublisherError):
    """A request breaks a rule or cannot be taken now; nothing was changed (exit 1)."""


class UsageError(PublisherError):
    """Bad arguments, configuration or files (exit 2)."""


class OperationRefused(Refused):
    """The publication cannot take this operation now (another one must be finished first)."""
