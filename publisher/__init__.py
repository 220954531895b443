"""The publisher job of the GB smart metering PKI transparency site.

It keeps an append-only transparency log (RFC 9162 hashing, C2SP tlog-tiles
storage, C2SP signed-note checkpoints) of approved CPL firmware-hash
associations, and publishes the IKI CRLs.
"""

__version__ = "0.1.0"
