"""The operator's changes to a publication, each run as one operation (``transaction.session``): its
lock, its journal, its recovery after a crash, and its git commit. The IKI side prepares the changes
(``pki.authority.issue``, ``pki.revocation.revoke``, ``pki.crl_publish.refresh``); only this module and
the publish job commit them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from publisher.config import Config
from publisher.pki import authority, crl_publish, registers, revocation
from publisher.publication import CRL_DIR, Operation
from publisher.publish import transaction

P = ParamSpec("P")
R = TypeVar("R")


def _in_session(
    name: str, change: Callable[Concatenate[Operation, Config, P], R]
) -> Callable[Concatenate[Config, P], R]:
    """``change`` (which takes the publication's writer first) run as operation ``name`` on a publication."""

    def run(config: Config, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with transaction.session(config.root, name) as session:
            return change(session, config, *args, **kwargs)

    run.__doc__ = f"``{name}``, committed: {change.__doc__}"
    return run


#: ``ca issue``: check the policy, sign, record, store and commit one certificate (``pki.authority.issue``).
issue = _in_session("issue", authority.issue)
#: ``revoke``: check, record and commit one revocation (``pki.revocation.revoke``); the next CRL refresh publishes it.
revoke = _in_session("revoke", revocation.revoke)


def refresh_crls(config: Config, force: bool = False) -> list[crl_publish.Refreshed]:
    """``crl refresh``: refresh the CRLs that are due (all with ``force``) as a resumable operation, and
    commit them. The next ``publish`` logs them (it logs every archived CRL the log lacks)."""
    with transaction.session(config.root, "crl-refresh") as session:
        planned = crl_publish.plan(config, force=force)  # an unusable key stops here, before the journal
        session.begin()
        done = crl_publish.sign_planned(config, planned)
        numbers = ", ".join(f"{d.issuer} #{d.info.number}" for d in done)
        session.commit([CRL_DIR, registers.CRL_NUMBERS], f"crl refresh: {numbers or 'finished an interrupted refresh'}")
        return done
