"""Log entry formats, built in one place: the ``crl/v1`` entry of a CRL, the ``cpl-association/v1`` entry
of an approved association, and reading entries back. The verifier defines the types, the canonical JSON
and the parsing (it checks every entry against them); this module builds what it checks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from publisher.pki.crl import CRLInfo
from verifier.cpl_verify import (
    ASSOCIATION_TYPE,
    CRL_TYPE,
    LOOKUP_TYPE,
    Association,
    Request,
    SubmissionFiles,
    canonical_json,
    iso_utc,
    parse_entry,
)

__all__ = [
    "ASSOCIATION_TYPE",
    "CRL_TYPE",
    "LOOKUP_TYPE",
    "association_entry",
    "canonical_json",
    "crl_entry",
    "json_entries",
    "parse_entry",
]


def crl_entry(issuer: str, info: CRLInfo) -> bytes:
    """The ``crl/v1`` log entry of a CRL, so anyone can check the CRL they were served was published to all."""
    described = info.to_json()
    return canonical_json(
        {
            "type": CRL_TYPE,
            "issuer": issuer,
            "number": info.number,
            "this_update": described["this_update"],
            "next_update": described["next_update"],
            "sha256": info.sha256,
        }
    )


def association_entry(
    a: Association, at: dt.datetime, request: Request, files: SubmissionFiles, digests: dict[str, str]
) -> dict[str, object]:
    """The ``cpl-association/v1`` log entry of an association the rules passed."""
    r = a.row
    assert a.manufacturer is not None and a.endorser is not None  # noqa: S101 - the rules passed
    entry: dict[str, object] = {
        "type": ASSOCIATION_TYPE,
        "device_model": {
            "manufacturer_id": r.manufacturer_id,
            "model_id": r.model_id,
            "hardware_version": r.hardware_version,
            "firmware_version": r.firmware_version,
        },
        "manufacturer_name": r.manufacturer_name,
        "device_type": r.device_type,
        "smets_version": r.smets_version,
        "image_sha256": r.image_hash,
        "manufacturer": a.manufacturer.to_json(),
        "endorser": a.endorser.to_json(),
        "approved_at": iso_utc(at),
        "panel_ref": request.panel_ref,
        "submitter_ref": request.submitter_ref,
        "submission_id": files.submission_id,
        "evidence": {
            "spreadsheet": digests[files.sheet_name],
            "request": digests["request.json"],
            "signatures": sorted(digests[n] for n in files.signatures),
        },
    }
    if a.replaces is not None:
        entry["replaces"] = {"index": a.replaces[0], "investigation_ref": a.replaces[1]}
    return entry


def json_entries(entries: Iterable[bytes]) -> list[tuple[int, dict[str, object]]]:
    """The entries that are JSON objects, with their indices."""
    return [(i, e) for i, raw in enumerate(entries) if (e := parse_entry(raw)) is not None]
