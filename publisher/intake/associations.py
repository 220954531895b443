"""The index of what the log already holds: the current association of each device model, the logged
submissions and CRLs, and the lookup the next ``lookup/v1`` entry commits to. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from publisher.entries import ASSOCIATION_TYPE, CRL_TYPE, LOOKUP_TYPE, parse_entry
from verifier.cpl_verify import Lookup

__all__ = ["AssociationIndex", "Current"]

ModelKey = tuple[str, str, str, str]


def model_key(entry: dict[str, object]) -> ModelKey:
    m = entry["device_model"]
    if not isinstance(m, dict):
        raise ValueError("device_model is not an object")
    return (
        str(m["manufacturer_id"]),
        str(m["model_id"]),
        str(m["hardware_version"]),
        str(m["firmware_version"]),
    )


@dataclass
class Current:
    """The association currently in force for a device model."""

    index: int
    image_hash: str


@dataclass
class AssociationIndex:
    """Which hash is current for each device model, and which submissions are already logged."""

    current: dict[ModelKey, Current] = field(default_factory=dict)
    # submission id -> the evidence of each logged submission of that id (spreadsheet, request, signatures)
    submissions: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    crls: dict[tuple[str, int], str] = field(default_factory=dict)  # (issuer, CRL number) -> sha256 of the DER
    lookup: Lookup = field(default_factory=Lookup)  # what the next lookup/v1 entry commits to
    size: int = 0

    def add(self, index: int, entry: dict[str, object] | None) -> None:
        """Account for log entry ``index``, the next in order (``None``: not a JSON object; it only counts)."""
        self.lookup.add(index, entry)
        self.size = index + 1
        if entry is None:
            return
        if entry.get("type") == CRL_TYPE:
            number = entry.get("number")
            if isinstance(number, int):
                self.crls[(str(entry.get("issuer")), number)] = str(entry.get("sha256"))
            return
        if entry.get("type") != ASSOCIATION_TYPE:
            return
        self.current[model_key(entry)] = Current(index, str(entry["image_sha256"]))
        evidence = entry.get("evidence")
        if isinstance(evidence, dict):
            signatures = evidence.get("signatures")
            key = (str(evidence.get("spreadsheet")), str(evidence.get("request")), *sorted(map(str, signatures or [])))
            self.submissions.setdefault(str(entry.get("submission_id")), set()).add(key)

    def add_raw(self, first: int, entries: Iterable[bytes]) -> None:
        """Account for raw log entries ``first``, ``first + 1``, ...; entries that are not JSON objects only count."""
        for i, raw in enumerate(entries, first):
            self.add(i, parse_entry(raw))

    @property
    def committed(self) -> bool:
        """Whether the last entry is a ``lookup/v1`` commitment (so it covers everything before it)."""
        return self.lookup.last_type == LOOKUP_TYPE

    @classmethod
    def from_entries(cls, entries: Iterable[bytes]) -> AssociationIndex:
        index = cls()
        index.add_raw(0, entries)
        return index
