"""Keys inside a PKCS#11 token (an HSM, SoftHSM, a cloud KMS's PKCS#11 library): signing and key generation,
with the private key never leaving the token.

Each signature opens its own session (load the module, find the token, log in, find the key, sign, log out),
so a token removed or restarted between two signatures fails one signature with a clear error instead of
leaving a stale handle, and nothing holds a login between commands. The module is finalised when the last
session of the process closes. ``python-pkcs11`` does the PKCS#11 calls (the README says why this library).

Mechanisms: ``CKM_ECDSA`` on a digest computed here (SoftHSM and several HSMs refuse ``CKM_ECDSA_SHA256``),
its raw ``r || s`` re-encoded as the DER ECDSA-Sig-Value X.509 expects; ``CKM_RSA_PKCS`` over a
DigestInfo computed here for RSA; ``CKM_EDDSA`` for the log's Ed25519 key. Every signature is verified
against the token's public key before it is returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from publisher.config import TokenKey
from publisher.keys import KeyUnusable, PublicKey, check_custody

# DER OIDs of the curves this publisher uses (CKA_EC_PARAMS).
_P256, _P384 = bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06052b81040022")
_CURVES: dict[bytes, ec.EllipticCurve] = {_P256: ec.SECP256R1(), _P384: ec.SECP384R1()}
_ED25519_PARAMS = (bytes.fromhex("06032b6570"), bytes.fromhex("130c656477617264733235353139"))  # OID, "edwards25519"
_RSA_EXPONENT = {Attribute.PUBLIC_EXPONENT: (65537).to_bytes(3, "big")}
# Key pairs ``_generate`` makes: key type, bits (RSA), mechanism, and the public template's parameters.
_KEY_PAIRS: dict[str, tuple[KeyType, int | None, Mechanism, dict[Attribute, Any]]] = {
    "ec-p256": (
        KeyType.EC,
        None,
        Mechanism.EC_KEY_PAIR_GEN,
        {Attribute.EC_PARAMS: _P256},
    ),
    "ec-p384": (KeyType.EC, None, Mechanism.EC_KEY_PAIR_GEN, {Attribute.EC_PARAMS: _P384}),
    "rsa-3072": (KeyType.RSA, 3072, Mechanism.RSA_PKCS_KEY_PAIR_GEN, _RSA_EXPONENT),
    "rsa-4096": (KeyType.RSA, 4096, Mechanism.RSA_PKCS_KEY_PAIR_GEN, _RSA_EXPONENT),
    "ed25519": (KeyType.EC_EDWARDS, None, Mechanism.EC_EDWARDS_KEY_PAIR_GEN, {Attribute.EC_PARAMS: _ED25519_PARAMS[0]}),
}
# RFC 8017 9.2: the DigestInfo prefix of each hash; RSA signs DigestInfo || digest with CKM_RSA_PKCS, so the
# token receives 51 or 67 bytes, never a whole CRL (network HSMs cap one call's input).
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
}
# Failures that mean the token went away or broke under us, not a configuration mistake.
_GONE = (
    pkcs11.exceptions.TokenNotPresent,
    pkcs11.exceptions.DeviceRemoved,
    pkcs11.exceptions.DeviceError,
    pkcs11.exceptions.SessionClosed,
    pkcs11.exceptions.SessionHandleInvalid,
    pkcs11.exceptions.ObjectHandleInvalid,
    pkcs11.exceptions.TokenNotRecognised,
)


class TokenError(KeyUnusable):
    """A token key cannot be used: module, token, PIN or key missing or wrong, or the token failed."""


# One lock per process around every session: PKCS#11's login state belongs to the whole application, so a
# second thread's login or logout would break the first's. Re-entrant, for a session opened inside another.
_lock = threading.RLock()
_open: dict[str, int] = {}  # module path -> sessions open in this process (logged in while any is)


def read_pin(ref: TokenKey, publication: Path | None) -> str:
    """The token's user PIN from its environment variable or its file (custody-checked like a key file)."""
    if ref.pin_env is not None:
        pin = os.environ.get(ref.pin_env, "")
        if not pin:
            raise TokenError(f"the PIN's environment variable {ref.pin_env} is empty or unset ({ref.describe()})")
        return pin
    if ref.pin_file is None:
        raise TokenError(f"no PIN source for {ref.describe()}: give pin_env or pin_file")
    if publication is not None:
        check_custody(ref.pin_file, publication)
    try:
        pin = ref.pin_file.read_text(encoding="utf-8").strip("\r\n")
    except OSError as exc:
        raise TokenError(f"cannot read the PIN file {ref.pin_file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise TokenError(f"the PIN file {ref.pin_file} is not UTF-8 text") from exc
    if not pin:
        raise TokenError(f"the PIN file {ref.pin_file} is empty")
    return pin


def _library(module: Path) -> Any:
    if not module.is_file():
        raise TokenError(f"PKCS#11 module {module} does not exist (is the HSM's library installed?)")
    try:
        return pkcs11.lib(str(module))
    except (RuntimeError, OSError, pkcs11.exceptions.PKCS11Error) as exc:
        raise TokenError(f"cannot load the PKCS#11 module {module}: {exc}") from exc


def _matches(token: Any, wanted: dict[str, str]) -> bool:
    have = {
        "token": token.label,
        "manufacturer": token.manufacturer_id,
        "model": token.model,
        "serial": token.serial.decode("ascii", "replace").strip() if isinstance(token.serial, bytes) else token.serial,
    }
    return all(str(have[k]).strip() == v for k, v in wanted.items())


def _token(lib: Any, ref: TokenKey) -> Any:
    wanted = ref.uri.token
    slot_id = ref.uri.path.get("slot-id")
    tokens = []
    for slot in lib.get_slots(token_present=True):
        if slot_id is not None and str(slot.slot_id) != slot_id:
            continue
        token = slot.get_token()
        if _matches(token, wanted):
            tokens.append(token)
    if not tokens:
        labels = sorted(str(slot.get_token().label).strip() for slot in lib.get_slots(token_present=True))
        present = ", ".join(repr(label) for label in labels if label) or "none initialised"
        raise TokenError(f"no token matching {ref.uri} in {ref.module} (tokens present: {present})")
    if len(tokens) > 1:
        raise TokenError(f"{len(tokens)} tokens match {ref.uri}: add serial= to the URI to choose one")
    return tokens[0]


@contextmanager
def session(ref: TokenKey, publication: Path | None, rw: bool = False) -> Iterator[Any]:
    """A logged-in session on ``ref``'s token; PKCS#11 failures become ``TokenError`` naming the key."""
    pin = read_pin(ref, publication)
    key = str(ref.module)
    with _lock:
        lib = _library(ref.module)
        nested = _open.get(key, 0) > 0
        _open[key] = _open.get(key, 0) + 1
        try:
            token = _token(lib, ref)
            # Inside another session the application is logged in already (a second C_Login fails).
            with token.open(user_pin=None if nested else pin, rw=rw) as opened:
                yield opened
        except pkcs11.exceptions.PinIncorrect as exc:
            raise TokenError(f"wrong PIN for the token of {ref.uri} (CKR_PIN_INCORRECT)") from exc
        except pkcs11.exceptions.PinLocked as exc:
            raise TokenError(f"the user PIN of the token of {ref.uri} is locked (CKR_PIN_LOCKED)") from exc
        except _GONE as exc:
            raise TokenError(
                f"the token of {ref.uri} was removed or failed ({type(exc).__name__}); nothing was signed"
            ) from exc
        except pkcs11.exceptions.PKCS11Error as exc:
            raise TokenError(f"the token of {ref.uri} refused: {type(exc).__name__} {exc}".rstrip()) from exc
        finally:
            _open[key] -= 1
            if _open[key] == 0:
                # Finalise so the next session reads the token afresh (a replaced or re-inserted token); a
                # failure to finalise must not hide the error that ended the session.
                del _open[key]
                with contextlib.suppress(pkcs11.exceptions.PKCS11Error):
                    lib.finalize()


def _find(opened: Any, ref: TokenKey, object_class: ObjectClass) -> Any:
    criteria: dict[Attribute, Any] = {Attribute.CLASS: object_class}
    if ref.uri.object is not None:
        criteria[Attribute.LABEL] = ref.uri.object
    if ref.uri.id is not None:
        criteria[Attribute.ID] = ref.uri.id
    found = list(opened.get_objects(criteria))
    what = "private key" if object_class == ObjectClass.PRIVATE_KEY else "public key"
    if not found:
        raise TokenError(f"no {what} matching {ref.uri} on the token")
    if len(found) > 1:
        raise TokenError(f"{len(found)} {what}s match {ref.uri}: name one by its id= in the URI")
    return found[0]


def _point(raw: bytes, sizes: tuple[int, ...]) -> bytes:
    """The point in CKA_EC_POINT: PKCS#11 says a DER OCTET STRING holding it, some tokens give it bare. Decided
    by length (``sizes``: the point's possible encodings), since a bare point can begin like a DER header."""
    if len(raw) in sizes:
        return raw
    for size in sizes:  # all under 128 octets: a short-form length
        if len(raw) == size + 2 and raw[0] == 0x04 and raw[1] == size:
            return raw[2:]
    raise TokenError(f"the token's CKA_EC_POINT ({len(raw)} bytes) is not a point of the key's curve")


def _public(obj: Any) -> PublicKey | ed25519.Ed25519PublicKey:
    key_type = obj[Attribute.KEY_TYPE]
    try:
        if key_type == KeyType.RSA:
            n = int.from_bytes(obj[Attribute.MODULUS], "big")
            e = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        params = obj[Attribute.EC_PARAMS]
        if key_type == KeyType.EC_EDWARDS and params in _ED25519_PARAMS:
            return ed25519.Ed25519PublicKey.from_public_bytes(_point(obj[Attribute.EC_POINT], (32,)))
        if key_type == KeyType.EC and params in _CURVES:
            curve = _CURVES[params]
            size = (curve.key_size + 7) // 8
            point = _point(obj[Attribute.EC_POINT], (1 + 2 * size, 1 + size))  # uncompressed, compressed
            return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except ValueError as exc:
        raise TokenError(f"the token's public key is not a valid key: {exc}") from exc
    raise TokenError(f"unsupported key type on the token ({key_type!r}): use ECDSA P-256/P-384, RSA or Ed25519")


def public_key(ref: TokenKey, publication: Path | None) -> PublicKey | ed25519.Ed25519PublicKey:
    """The public key of ``ref``, read from the token; also checks that its private key is there."""
    with session(ref, publication) as opened:
        _find(opened, ref, ObjectClass.PRIVATE_KEY)
        return _public(_find(opened, ref, ObjectClass.PUBLIC_KEY))


def _sign(ref: TokenKey, publication: Path | None, data: bytes, mechanism: Mechanism) -> bytes:
    with session(ref, publication) as opened:
        signature: bytes = _find(opened, ref, ObjectClass.PRIVATE_KEY).sign(data, mechanism=mechanism)
        return signature


class TokenIssuerKey:
    """A CA key in a token, signing as X.509 expects (``keys.IssuerKey``)."""

    def __init__(self, ref: TokenKey, publication: Path | None, public: PublicKey) -> None:
        self.ref, self.publication, self._public = ref, publication, public

    @classmethod
    def open(cls, ref: TokenKey, publication: Path | None) -> TokenIssuerKey:
        """The key ``ref`` names, after checking that the token, the PIN and both key objects are good."""
        public = public_key(ref, publication)
        if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise TokenError(f"{ref.uri} is an Ed25519 key; a CA key is ECDSA or RSA")
        return cls(ref, publication, public)

    def public_key(self) -> PublicKey:
        """The key's public half (read from the token when opened)."""
        return self._public

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """An X.509 signature of ``data``: DER ECDSA-Sig-Value, or RSA PKCS#1 v1.5."""
        public = self._public
        try:
            if isinstance(public, ec.EllipticCurvePublicKey):
                raw = _sign(self.ref, self.publication, hashlib.new(algorithm.name, data).digest(), Mechanism.ECDSA)
                half = len(raw) // 2
                signature = encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))
                public.verify(signature, data, ec.ECDSA(algorithm))
            else:
                if algorithm.name not in _DIGEST_INFO:
                    raise TokenError(f"no RSA DigestInfo for {algorithm.name}")
                digest_info = _DIGEST_INFO[algorithm.name] + hashlib.new(algorithm.name, data).digest()
                signature = _sign(self.ref, self.publication, digest_info, Mechanism.RSA_PKCS)
                public.verify(signature, data, padding.PKCS1v15(), algorithm)
        except InvalidSignature as exc:
            raise TokenError(f"the token's signature with {self.ref.uri} does not verify with its public key") from exc
        return signature


class TokenEd25519Key:
    """The log's Ed25519 key in a token (``CKM_EDDSA``), usable wherever an ``Ed25519PrivateKey`` signs."""

    def __init__(self, ref: TokenKey, publication: Path | None, public: ed25519.Ed25519PublicKey) -> None:
        self.ref, self.publication, self._public = ref, publication, public

    @classmethod
    def open(cls, ref: TokenKey, publication: Path | None) -> TokenEd25519Key:
        """The key ``ref`` names, after checking that the token, the PIN and both key objects are good."""
        public = public_key(ref, publication)
        if not isinstance(public, ed25519.Ed25519PublicKey):
            raise TokenError(f"{ref.uri} is not an Ed25519 key; the log signs with Ed25519")
        return cls(ref, publication, public)

    def public_key(self) -> ed25519.Ed25519PublicKey:
        """The key's public half (read from the token when opened)."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """A pure Ed25519 signature of ``data`` (RFC 8032), made in the token and verified here."""
        signature = _sign(self.ref, self.publication, data, Mechanism.EDDSA)
        try:
            self._public.verify(signature, data)
        except InvalidSignature as exc:
            raise TokenError(f"the token's signature with {self.ref.uri} does not verify with its public key") from exc
        return signature


def _new_id() -> bytes:
    return os.urandom(8)


def generate_issuer_key(ref: TokenKey, publication: Path | None, algorithm: str) -> TokenIssuerKey:
    """A new CA key pair made inside the token (``algorithm``: ec-p256, ec-p384, rsa-3072 or rsa-4096); see
    ``_generate``."""
    public = _generate(ref, publication, algorithm)
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise TokenError(f"{algorithm} is not a CA key algorithm")
    return TokenIssuerKey(ref, publication, public)


def generate_ed25519(ref: TokenKey, publication: Path | None) -> TokenEd25519Key:
    """A new Ed25519 key pair (the log's) made inside the token; see ``_generate``."""
    public = _generate(ref, publication, "ed25519")
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise TokenError("the token did not make an Ed25519 key")
    return TokenEd25519Key(ref, publication, public)


def _holding(opened: Any, label: str | None, key_id: bytes | None) -> list[Any]:
    """The token's objects with this label or this id."""
    found = []
    if label is not None:
        found += list(opened.get_objects({Attribute.LABEL: label}))
    if key_id is not None:
        found += list(opened.get_objects({Attribute.ID: key_id}))
    return found


def check_free(refs: list[TokenKey], publication: Path | None) -> None:
    """Refuse if the token already holds an object with the label or id of any of ``refs``."""
    for ref in refs:
        with session(ref, publication) as opened:
            if _holding(opened, ref.uri.object, ref.uri.id):
                raise TokenError(f"the token already holds an object named by {ref.uri}: a key is never replaced")


def destroy(refs: list[TokenKey], publication: Path | None) -> None:
    """Destroy the objects (both halves of each key pair) ``refs`` name; for undoing a ``ca init`` that failed
    after making its keys."""
    for ref in refs:
        with session(ref, publication, rw=True) as opened:
            for obj in _holding(opened, ref.uri.object, ref.uri.id):
                obj.destroy()


def _generate(ref: TokenKey, publication: Path | None, algorithm: str) -> PublicKey | ed25519.Ed25519PublicKey:
    """Create a non-extractable, sensitive key pair in the token, labelled and identified as ``ref`` says;
    returns its public key. Refuses if an object with that label or id is already there: a key is never
    replaced, and two keys never answer to one URI."""
    if ref.uri.object is None:
        raise TokenError(f"{ref.uri}: name the new key with object=<label>")
    key_id = ref.uri.id if ref.uri.id is not None else _new_id()
    common = {Attribute.LABEL: ref.uri.object, Attribute.ID: key_id, Attribute.TOKEN: True}
    private = {
        **common,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.DERIVE: False,
    }
    public_template: dict[Attribute, Any] = {**common, Attribute.VERIFY: True, Attribute.PRIVATE: False}
    with session(ref, publication, rw=True) as opened:
        if _holding(opened, ref.uri.object, key_id):
            raise TokenError(f"the token already holds an object with the label or id of {ref.uri}")
        if algorithm not in _KEY_PAIRS:
            raise TokenError(f"unknown key algorithm {algorithm!r} (choose from {', '.join(_KEY_PAIRS)})")
        key_type, bits, mechanism, attributes = _KEY_PAIRS[algorithm]
        pub, _ = opened.generate_keypair(
            key_type,
            bits,
            mechanism=mechanism,
            public_template={**public_template, **attributes},
            private_template=private,
            store=True,
        )
        return _public(pub)
