"""The operator's changes to a publication, each run as one operation (``transaction.session``): its
lock, its journal, its recovery after a crash, and its git commit. The IKI side prepares the changes
(``pki.authority.issue``, ``pki.revocation.revoke``, ``pki.crl_publish.refresh``); only this module and
the publish job commit them."""

from __future__ import annotations

import datetime as dt

from publisher.config import Config
from publisher.pki import authority, crl_publish, profile, registers, revocation
from publisher.pki.registers import RevocationRecord
from publisher.publication import CRL_DIR
from publisher.publish import transaction


def issue(
    config: Config,
    issuer_name: str,
    request: profile.IssueRequest,
    role: str | None = None,
    approval_ref: str | None = None,
    now: dt.datetime | None = None,
) -> authority.Issued:
    """``ca issue``: check the policy, sign, record, store and commit one certificate."""
    with transaction.session(config.root, "issue") as session:
        return authority.issue(session, config, issuer_name, request, role, approval_ref, now)


def revoke(
    config: Config,
    issuer: str,
    serial: int,
    reason: str,
    invalidity_date: dt.datetime | None = None,
    ref: str | None = None,
    unknown_serial: bool = False,
    now: dt.datetime | None = None,
) -> RevocationRecord:
    """``revoke``: check and record one revocation, and commit it (the next CRL refresh publishes it)."""
    with transaction.session(config.root, "revoke") as session:
        return revocation.revoke(session, config, issuer, serial, reason, invalidity_date, ref, unknown_serial, now)


def refresh_crls(config: Config, force: bool = False) -> list[crl_publish.Refreshed]:
    """``crl refresh``: refresh the CRLs that are due (all with ``force``) as a resumable operation, and
    commit them. The next ``publish`` logs them (it logs every archived CRL the log lacks)."""
    with transaction.session(config.root, "crl-refresh") as session:
        session.begin()
        done = crl_publish.refresh(config, force=force)
        numbers = ", ".join(f"{d.issuer} #{d.info.number}" for d in done)
        session.commit([CRL_DIR, registers.CRL_NUMBERS], f"crl refresh: {numbers or 'finished an interrupted refresh'}")
        return done
