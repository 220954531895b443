"""Issuer private keys: generation for the demo CA, and loading under the key-custody rules.

A key comes from a file outside the publication's git tree, or from an
environment variable holding PEM (what CI secrets provide). A key file that
git tracks, or that lies inside the publication, is refused.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from publisher.config import ConfigError, KeySource

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
ALGORITHMS = ("ec-p256", "ec-p384", "rsa-3072", "rsa-4096")
DEFAULT_ALGORITHM = "ec-p256"


class KeyUnusable(ConfigError):
    """A key cannot be used (custody rule, format or type)."""


class IssuerKey(Protocol):
    """A CA key that signs as X.509 expects, wherever it lives (a file, an environment variable, a token)."""

    def public_key(self) -> PublicKey:
        """The public half."""
        ...

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """An X.509 signature of ``data`` hashed with ``algorithm``: DER ECDSA-Sig-Value or RSA PKCS#1 v1.5."""
        ...


@dataclass(frozen=True)
class FileIssuerKey:
    """An ``IssuerKey`` held in memory (read from a file or an environment variable)."""

    private: PrivateKey

    def public_key(self) -> PublicKey:
        """The public half."""
        return self.private.public_key()

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """ECDSA or RSA PKCS#1 v1.5 over ``data``."""
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.sign(data, ec.ECDSA(algorithm))
        return self.private.sign(data, padding.PKCS1v15(), algorithm)


def generate(algorithm: str = DEFAULT_ALGORITHM) -> PrivateKey:
    """A new key: ECDSA P-256 (default) or P-384, or RSA 3072/4096."""
    if algorithm == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm in ("rsa-3072", "rsa-4096"):
        return rsa.generate_private_key(65537, int(algorithm[4:]))
    raise KeyUnusable(f"unknown key algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})")


def to_pem(key: PrivateKey) -> bytes:
    pem, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return key.private_bytes(pem, pkcs8, serialization.NoEncryption())


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write an unencrypted PKCS#8 PEM key readable only by its owner (demo and tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(to_pem(key))


def check_key_destination(folder: Path, publication: Path) -> None:
    """Refuse to write a new private key into ``folder`` if it lies in the publication or in any git work tree.

    Ignored or not: a key in a work tree is one ``git add -f`` (or a changed
    .gitignore) away from the repository.
    """
    folder = folder.expanduser().resolve()
    if folder.is_relative_to(publication.resolve()):
        raise KeyUnusable(f"{folder} is inside the publication {publication}; private keys must be kept outside it")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    import git  # here, not at the top: loading a key must not load git for the IKI side (tests/test_architecture.py)

    try:
        repo = git.Repo(probe, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return
    if repo.working_tree_dir is not None:
        raise KeyUnusable(
            f"{folder} is inside the git work tree {repo.working_tree_dir}; "
            "private keys never go into a repository: choose a folder outside any repository"
        )


def check_custody(path: Path, publication: Path) -> None:
    path = path.resolve()
    publication = publication.resolve()
    import git  # see check_key_destination

    try:
        repo = git.Repo(publication, search_parent_directories=True)
        tree = Path(repo.working_tree_dir).resolve() if repo.working_tree_dir else None
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        repo, tree = None, None
    if repo is not None and tree is not None and path.is_relative_to(tree):
        rel = path.relative_to(tree).as_posix()
        if repo.git.ls_files("--", rel):
            raise KeyUnusable(f"key file {path} is tracked by git: private keys must never enter the repository")
        if not repo.ignored(rel):
            raise KeyUnusable(
                f"key file {path} is inside the git work tree and not ignored, so a commit could take it; "
                "keep keys outside the repository"
            )
    if path.is_relative_to(publication):
        raise KeyUnusable(f"key file {path} is inside the publication folder; keep keys outside it")


def read_key_material(source: KeySource, publication: Path | None) -> bytes:
    """The bytes of a key from its file (custody-checked against ``publication``) or environment variable."""
    if source.file is not None:
        if publication is not None:
            check_custody(source.file, publication)
        try:
            return source.file.read_bytes()
        except OSError as exc:
            raise KeyUnusable(f"cannot read key {source.file}: {exc.strerror or exc}") from exc
    text = os.environ.get(source.env or "", "")
    if not text:
        raise KeyUnusable(f"environment variable {source.env} is empty or unset")
    return text.encode()


def as_issuer_key(key: IssuerKey | PrivateKey) -> IssuerKey:
    """``key`` as an ``IssuerKey`` (a ``cryptography`` private key is wrapped)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return FileIssuerKey(key)
    return key


def load_issuer_key(source: KeySource, publication: Path) -> IssuerKey:
    """An issuer key from its configured source: a token (checked present, with both key objects), or a
    file or environment variable under the custody rules of ``load_private_key``."""
    if source.token is not None:
        from publisher import hsm  # here: hsm imports this module, and file keys need no PKCS#11 library

        return hsm.TokenIssuerKey.open(source.token, publication)
    return FileIssuerKey(load_private_key(source, publication))


def load_private_key(source: KeySource, publication: Path) -> PrivateKey:
    """Load an issuer key from its file or environment variable, enforcing the custody rules.

    Refused: a key file git tracks, one inside the publication folder, and one
    inside a git work tree that git does not ignore.
    """
    if source.token is not None:
        raise KeyUnusable(f"{source.describe()} lives in a token: its private key cannot be read")
    data = read_key_material(source, publication)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyUnusable(f"key from {source.describe()} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise KeyUnusable(f"key from {source.describe()} is not an ECDSA or RSA key")
    return key


def spki_sha256(key: PublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex (the register's key fingerprint)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()
