"""The IKI side of the publisher: configuration of issuers, issuance and its policy checks,
the revocation register, and CRL signing."""
