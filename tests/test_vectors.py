"""Published test vectors (``tests/vectors/``, sources and licences in its README) run against the
publisher's own code.

The vectors are vendored in the repository, so a fresh clone tests them. If
they are missing every test here fails: silently skipping them would hide the
only cross-check against other implementations.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from publisher.tlog import CorruptLog, LogReader
from publisher.tlog.checkpoint import (
    CheckpointError,
    SignedCheckpoint,
    open_checkpoint,
    parse_body,
    parse_tlog_proof,
    verify_tlog_proof,
)
from publisher.tlog.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_hash_range,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from publisher.tlog.note import EM_DASH, NoteError, Signer, Verifier, key_id, open_note, parse_note, sign_note
from publisher.tlog.tiles import (
    TILE_WIDTH,
    Tile,
    TileError,
    decode_bundle,
    encode_bundle,
    encode_index,
    parse_path,
    right_edge,
    tiles_for_size,
)

# -- locating the vectors ------------------------------------------------------

VECTORS = Path(__file__).resolve().parent / "vectors"
MERKLE = VECTORS / "merkle-rfc6962"
TESSERA = VECTORS / "tessera-testdata-log"
SUNLIGHT = VECTORS / "sunlight-mirror-300"
EXAMPLES_FILE = VECTORS / "signed-note" / "examples.json"


@pytest.fixture(autouse=True)
def _require_vectors() -> None:
    """Fail (never skip) every test in this module when the vectors are not there."""
    if not VECTORS.is_dir():
        pytest.fail(
            f"test vectors not found at {VECTORS}; they are part of the repository (tests/vectors/)",
            pytrace=False,
        )


def _params(items: list[Any], ids: Callable[[Any], str]) -> list[Any]:
    """pytest params with readable ids; a single failing placeholder when the vectors are missing."""
    if not items:
        return [pytest.param(None, id="vectors-missing")]
    return [pytest.param(item, id=ids(item)) for item in items]


def _vector_files(kind: str) -> list[Path]:
    return sorted((MERKLE / kind).glob("**/*.json")) if (MERKLE / kind).is_dir() else []


def _vector_id(path: Path) -> str:
    return path.relative_to(MERKLE).with_suffix("").as_posix()


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _examples() -> list[dict[str, Any]]:
    return _load_json(EXAMPLES_FILE) if EXAMPLES_FILE.is_file() else []


def _example(example_id: str) -> dict[str, Any]:
    for ex in _examples():
        if ex["id"] == example_id:
            return ex
    raise AssertionError(f"{EXAMPLES_FILE}: no example {example_id!r}")


def _verifier_of(example_id: str) -> Verifier:
    return Verifier.from_vkey(_example(example_id)["verifier"]["vkey"])


def _copy_tree(src: Path, dst: Path) -> Path:
    """Copy a vector folder and make the copy writable (the originals are read-only)."""
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return dst


# -- 1-3. RFC 6962 inclusion / consistency vectors -------------------------------

INCLUSION_FILES = _vector_files("inclusion")
CONSISTENCY_FILES = _vector_files("consistency")

#: Vectors whose expectation the project deliberately does not share, and why.
#: Go's VerifyConsistency returns early for equal sizes and only compares the two
#: roots, so it accepts 12-byte "roots". The project rejects every hash that is
#: not 32 bytes (TLOG-FORMATS.md section 6, item 8: "reject hashes != 32 bytes").
PROJECT_RULE_OVERRIDES = {
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty": (
        True,
        'roots are 12 bytes (base64 of "don\'t care 2"); the project rejects hashes that are not 32 bytes',
    ),
}


def _b64(value: Any) -> bytes | None:
    """Strict standard base64, or None when the field is not valid base64 text."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _proof_field(vector: dict[str, Any]) -> list[bytes] | None:
    """The ``proof`` list; a null or missing proof is the empty proof. None if an item does not decode."""
    raw = vector.get("proof")
    if raw is None:
        return []
    assert isinstance(raw, list), f"proof must be a list or null, got {raw!r}"
    items = [_b64(p) for p in raw]
    if any(i is None for i in items):
        return None
    return [i for i in items if i is not None]


def _expected_error(vector_id: str, vector: dict[str, Any]) -> bool:
    if vector_id in PROJECT_RULE_OVERRIDES:
        return PROJECT_RULE_OVERRIDES[vector_id][0]
    want = vector["wantErr"]
    assert isinstance(want, bool)
    return want


def _ref_tree() -> dict[str, Any]:
    tree: dict[str, Any] = _load_json(MERKLE / "reference-tree.json")
    return tree


def _ref_leaf_hashes() -> list[bytes]:
    return [leaf_hash(bytes.fromhex(h)) for h in _ref_tree()["leaf_inputs_hex"]]


def _ref_roots() -> list[bytes]:
    return [bytes.fromhex(h) for h in _ref_tree()["root_hash_by_tree_size_hex"]]


def test_vector_counts_match_the_readme() -> None:
    assert len(INCLUSION_FILES) == 98
    assert len(CONSISTENCY_FILES) == 98
    assert len(_ref_tree()["leaf_inputs_hex"]) == 8
    assert len(_ref_roots()) == 9


@pytest.mark.parametrize("path", _params(INCLUSION_FILES, _vector_id))
def test_inclusion_vector(path: Path) -> None:
    v = _load_json(path)
    for key in ("leafIdx", "treeSize", "root", "leafHash", "wantErr"):
        assert key in v, f"{path}: missing field {key}"
    want_err = _expected_error(_vector_id(path), v)
    leaf, root, proof = _b64(v["leafHash"]), _b64(v["root"]), _proof_field(v)
    if leaf is None or root is None or proof is None:
        assert want_err, f"{path}: a field is not valid base64 but the vector expects success"
        return
    if want_err:
        with pytest.raises(ProofError):
            verify_inclusion(v["leafIdx"], v["treeSize"], leaf, proof, root)
    else:
        verify_inclusion(v["leafIdx"], v["treeSize"], leaf, proof, root)


@pytest.mark.parametrize("path", _params(CONSISTENCY_FILES, _vector_id))
def test_consistency_vector(path: Path) -> None:
    v = _load_json(path)
    for key in ("size1", "size2", "root1", "root2", "wantErr"):
        assert key in v, f"{path}: missing field {key}"
    want_err = _expected_error(_vector_id(path), v)
    root1, root2, proof = _b64(v["root1"]), _b64(v["root2"]), _proof_field(v)
    if root1 is None or root2 is None or proof is None:
        assert want_err, f"{path}: a field is not valid base64 but the vector expects success"
        return
    if want_err:
        with pytest.raises(ProofError):
            verify_consistency(v["size1"], v["size2"], root1, root2, proof)
    else:
        verify_consistency(v["size1"], v["size2"], root1, root2, proof)


def test_project_rule_overrides_name_real_vectors() -> None:
    """Every override must point at an existing vector whose upstream expectation differs."""
    for vector_id in PROJECT_RULE_OVERRIDES:
        v = _load_json(MERKLE / f"{vector_id}.json")
        assert v["wantErr"] != PROJECT_RULE_OVERRIDES[vector_id][0]


def _happy(files: list[Path]) -> list[Path]:
    """Non-error base proofs over the 8-leaf reference tree (folders 0..4)."""
    out = []
    for f in files:
        rel = f.relative_to(MERKLE).parts
        if rel[1] in {"0", "1", "2", "3", "4"} and not _load_json(f)["wantErr"]:
            out.append(f)
    return out


def test_happy_path_vectors_are_found() -> None:
    names = [_vector_id(f) for f in _happy(INCLUSION_FILES) + _happy(CONSISTENCY_FILES)]
    assert sorted(names) == sorted(f"{k}/{i}/happy-path" for k in ("inclusion", "consistency") for i in range(5))


@pytest.mark.parametrize("path", _params(_happy(INCLUSION_FILES), _vector_id))
def test_inclusion_proof_generation_matches_vector(path: Path) -> None:
    v = _load_json(path)
    leaves = _ref_leaf_hashes()
    # The vector really is over the reference tree.
    assert base64.b64decode(v["root"]) == _ref_roots()[v["treeSize"]]
    assert base64.b64decode(v["leafHash"]) == leaves[v["leafIdx"]]
    expected = [base64.b64decode(p) for p in v["proof"] or []]
    hash_range = list_hash_range(leaves[: v["treeSize"]])
    assert inclusion_proof(v["leafIdx"], v["treeSize"], hash_range) == expected


@pytest.mark.parametrize("path", _params(_happy(CONSISTENCY_FILES), _vector_id))
def test_consistency_proof_generation_matches_vector(path: Path) -> None:
    v = _load_json(path)
    roots = _ref_roots()
    assert base64.b64decode(v["root1"]) == roots[v["size1"]]
    assert base64.b64decode(v["root2"]) == roots[v["size2"]]
    expected = [base64.b64decode(p) for p in v["proof"] or []]
    hash_range = list_hash_range(_ref_leaf_hashes()[: v["size2"]])
    assert consistency_proof(v["size1"], v["size2"], hash_range) == expected


@pytest.mark.parametrize("size", range(9), ids=lambda n: f"size-{n}")
def test_reference_tree_root_for_every_size(size: int) -> None:
    assert root_of(_ref_leaf_hashes()[:size]) == _ref_roots()[size]


def test_reference_tree_node_hashes() -> None:
    """Every node of the 8-leaf tree: level l, index i is the root of leaves [i*2^l, (i+1)*2^l)."""
    leaves = _ref_leaf_hashes()
    levels = _ref_tree()["node_hashes_by_level_hex"]
    assert [h.hex() for h in leaves] == levels[0]
    for level, hashes in enumerate(levels):
        width = 1 << level
        assert len(hashes) == 8 // width
        for i, h in enumerate(hashes):
            assert root_of(leaves[i * width : (i + 1) * width]).hex() == h


def test_reference_tree_all_generated_proofs_verify() -> None:
    """Generation and verification agree on every (index, size) and (old, new) pair of the reference tree."""
    leaves, roots = _ref_leaf_hashes(), _ref_roots()
    for size in range(1, 9):
        hr = list_hash_range(leaves[:size])
        for index in range(size):
            verify_inclusion(index, size, leaves[index], inclusion_proof(index, size, hr), roots[size])
        for old in range(1, size + 1):
            verify_consistency(old, size, roots[old], roots[size], consistency_proof(old, size, hr))


def test_project_rule_old_size_zero_with_empty_proof_is_consistent() -> None:
    """c2sp.org/tlog-witness: old size 0 with an empty proof is accepted (transparency-dev/merkle rejects it)."""
    for size, root in enumerate(_ref_roots()):
        verify_consistency(0, size, EMPTY_ROOT, root, [])
    with pytest.raises(ProofError):
        verify_consistency(0, 8, EMPTY_ROOT, _ref_roots()[8], [EMPTY_ROOT])


@pytest.mark.parametrize(
    ("new_size", "old_root", "new_root"),
    [
        pytest.param(8, b"\x42" * 32, None, id="0-to-8-bogus-old-root"),
        pytest.param(0, b"\x42" * 32, b"\x42" * 32, id="0-to-0-bogus-roots"),
    ],
)
def test_size_zero_tree_must_have_the_empty_root(new_size: int, old_root: bytes, new_root: bytes | None) -> None:
    """A tree of size 0 has exactly one root, SHA-256(""); (0, other root) is no tree and extends nothing.

    tlog-witness (HEAD) spells this out: "a size-0 checkpoint has the empty root" (else 422).
    """
    root = _ref_roots()[new_size] if new_root is None else new_root
    with pytest.raises(ProofError):
        verify_consistency(0, new_size, old_root, root, [])


# -- 4. signed notes -----------------------------------------------------------------


def _all_vkeys() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for ex in _examples():
        for v in [ex["verifier"]] if "verifier" in ex else ex.get("verifiers", []):
            out.append((ex["id"], v))
    return out


def _bad_vkeys() -> list[str]:
    return [k for ex in _examples() for k in ex.get("bad_vkeys", [])]


def _valid_notes() -> list[dict[str, Any]]:
    return [ex for ex in _examples() if "note" in ex and str(ex.get("expect", "")).startswith("valid")]


def test_examples_file_covers_what_the_readme_lists() -> None:
    ids = {ex["id"] for ex in _examples()}
    assert {
        "c2sp-signed-note-example",
        "go-sumdb-note-peterneumann",
        "go-sumdb-note-two-signers",
        "go-sumdb-bad-vkeys",
        "tessera-testdata-log-key",
        "sunlight-mirror-cosigner",
        "c2sp-cosignature-ex",
    } <= ids
    assert len(_all_vkeys()) == 6
    assert len(_bad_vkeys()) == 2
    assert len(_valid_notes()) == 2


@pytest.mark.parametrize("item", _params(_all_vkeys(), lambda it: f"{it[0]}:{it[1]['name']}"))
def test_vkey_parses(item: tuple[str, dict[str, Any]]) -> None:
    _, expected = item
    v = Verifier.from_vkey(expected["vkey"])
    assert v.name == expected["name"]
    assert v.key_id == int(expected["key_id_hex"], 16)
    assert v.sig_type == expected["sig_type"]
    assert v.public_key.hex() == expected["public_key_hex"]
    assert v.vkey == expected["vkey"]
    assert key_id(v.name, v.sig_type, v.public_key) == v.key_id


@pytest.mark.parametrize("vkey", _params(_bad_vkeys(), lambda k: k.split("+")[1]))
def test_bad_vkey_is_rejected(vkey: str) -> None:
    # Key IDs were adjusted upstream so only the key bytes are wrong: prove that first.
    name, hex_id, b64 = vkey.split("+", 2)
    raw = base64.b64decode(b64, validate=True)
    assert key_id(name, raw[0], raw[1:]) == int(hex_id, 16)
    with pytest.raises(NoteError, match=r"unsupported verifier key type|expected 32"):
        Verifier.from_vkey(vkey)


@pytest.mark.parametrize("example", _params(_valid_notes(), lambda ex: ex["id"]))
def test_example_note_opens(example: dict[str, Any]) -> None:
    verifier = Verifier.from_vkey(example["verifier"]["vkey"])
    note = open_note(example["note"], [verifier])
    assert note.verified_by == (verifier,)
    assert example["note"].startswith(note.text)
    assert [(s.name, s.key_id) for s in note.signatures] == [(verifier.name, verifier.key_id)]
    # bytes in, same result
    assert open_note(example["note"].encode(), [verifier]).text == note.text


def test_two_signer_note_ignores_the_untrusted_line() -> None:
    ex = _example("go-sumdb-note-two-signers")
    peter, enoch = (Verifier.from_vkey(v["vkey"]) for v in ex["verifiers"])
    only_peter = open_note(ex["note"], [peter])
    assert only_peter.verified_by == (peter,)
    assert [s.name for s in only_peter.signatures] == ["PeterNeumann", "EnochRoot"]
    assert open_note(ex["note"], [enoch]).verified_by == (enoch,)
    assert set(open_note(ex["note"], [peter, enoch]).verified_by) == {peter, enoch}


def _signed_examples() -> list[dict[str, Any]]:
    return [ex for ex in _examples() if "signer_key_TEST_ONLY" in ex and "note" in ex]


@pytest.mark.parametrize("example", _params(_signed_examples(), lambda ex: ex["id"]))
def test_signing_is_byte_exact(example: dict[str, Any]) -> None:
    signer = Signer.from_skey(example["signer_key_TEST_ONLY"])
    assert signer.verifier.vkey == example["verifier"]["vkey"]
    note: str = example["note"]
    text = note[: note.rindex("\n\n") + 1]
    assert sign_note(text, [signer]) == note


def test_signer_keys_match_their_vkeys() -> None:
    signers = [ex for ex in _examples() if "signer_key_TEST_ONLY" in ex]
    assert len(signers) == 2
    for ex in signers:
        assert Signer.from_skey(ex["signer_key_TEST_ONLY"]).verifier.vkey == ex["verifier"]["vkey"]


def test_cosignature_example_parses() -> None:
    ex = _example("c2sp-cosignature-ex")
    note = parse_note(ex["note"])
    cp = parse_body(note.text)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert cp.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    log_sig, witness_sig = note.signatures
    assert (log_sig.name, len(log_sig.signature)) == ("example.com/behind-the-sofa", 64)
    assert witness_sig.name == "witness.example.com/w1"
    assert witness_sig.key_id == 0x8D66CF3F
    assert len(witness_sig.signature) == 72  # 8-byte timestamp || 64-byte Ed25519 signature
    assert int.from_bytes(witness_sig.signature[:8], "big") == 1679315147


def _peter() -> tuple[str, Verifier, Signer]:
    ex = _example("go-sumdb-note-peterneumann")
    return ex["note"], Verifier.from_vkey(ex["verifier"]["vkey"]), Signer.from_skey(ex["signer_key_TEST_ONLY"])


def _flip_signature_byte(note: str, line_no: int, byte: int) -> str:
    """Flip one byte of the decoded payload of signature line ``line_no`` (0-based)."""
    text, _, sigs = note.rpartition("\n\n")
    lines = sigs.split("\n")
    prefix, b64 = lines[line_no].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[byte] ^= 0x01
    lines[line_no] = f"{prefix} {base64.b64encode(bytes(raw)).decode()}"
    return text + "\n\n" + "\n".join(lines)


@pytest.mark.parametrize("byte", [4, 20, 67], ids=lambda b: f"byte-{b}")
def test_flipped_signature_byte_is_rejected(byte: int) -> None:
    note, peter, _ = _peter()
    bad = _flip_signature_byte(note, 0, byte)
    assert bad != note
    with pytest.raises(NoteError, match="does not verify"):
        open_note(bad, [peter])


def test_failing_known_key_rejects_note_even_if_another_key_verifies() -> None:
    ex = _example("go-sumdb-note-two-signers")
    peter, enoch = (Verifier.from_vkey(v["vkey"]) for v in ex["verifiers"])
    bad = _flip_signature_byte(ex["note"], 1, 30)  # EnochRoot's line
    assert open_note(bad, [peter]).verified_by == (peter,)  # unknown signer: ignored
    with pytest.raises(NoteError):
        open_note(bad, [peter, enoch])


def test_flipped_key_id_makes_the_line_unknown() -> None:
    note, peter, _ = _peter()
    bad = _flip_signature_byte(note, 0, 0)
    with pytest.raises(NoteError, match="not signed by any trusted key"):
        open_note(bad, [peter])


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda n: n.replace("\n", "\r\n", 1), id="carriage-return"),
        pytest.param(lambda n: n.replace(" ", "\t", 1), id="tab-in-text"),
        pytest.param(lambda n: n.replace("\n\n", "\n", 1), id="no-blank-line"),
        pytest.param(lambda n: n[:-1], id="no-final-newline"),
        pytest.param(lambda n: n.replace(EM_DASH, "-", 1), id="hyphen-not-em-dash"),
        pytest.param(lambda n: n + "\n", id="trailing-blank-line"),
    ],
)
def test_malformed_note_is_rejected(mutate: Callable[[str], str]) -> None:
    note, peter, _ = _peter()
    bad = mutate(note)
    assert bad != note
    with pytest.raises(NoteError):
        parse_note(bad)
    with pytest.raises(NoteError):
        open_note(bad, [peter])


def test_note_text_with_blank_lines_splits_at_the_last_one() -> None:
    _, peter, signer = _peter()
    text = "first paragraph\n\nsecond paragraph\n\n\nthird\n"
    note = sign_note(text, [signer])
    opened = open_note(note, [peter])
    assert opened.text == text
    assert opened.verified_by == (peter,)
    assert len(opened.signatures) == 1


# -- 5. the Tessera test log ------------------------------------------------------

TESSERA_ORIGIN = "example.com/log/testdata"
# Upstream spellings, in order.
TESSERA_WORDS = [
    b"one",
    b"two",
    b"three",
    b"four",
    b"five",
    b"six",
    b"seven",
    b"eit",
    b"nain",
    b"ten",
    b"ileven",
    b"twelf",
    b"threeten",
    b"fourten",
    b"fivten",
]


def _tessera_verifier() -> Verifier:
    v = _verifier_of("tessera-testdata-log-key")
    assert v.name == TESSERA_ORIGIN
    return v


def _tessera_checkpoint(n: int) -> SignedCheckpoint:
    return open_checkpoint((TESSERA / f"checkpoint.{n}").read_bytes(), TESSERA_ORIGIN, [_tessera_verifier()])


@pytest.fixture(scope="module")
def tessera_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_tree(TESSERA, tmp_path_factory.mktemp("tessera") / "log")


@pytest.fixture(scope="module")
def tessera_reader(tessera_log: Path) -> LogReader:
    return LogReader(tessera_log, TESSERA_ORIGIN, [_tessera_verifier()])


@pytest.mark.parametrize("n", range(16), ids=lambda n: f"checkpoint.{n}")
def test_tessera_checkpoint_opens(n: int) -> None:
    signed = _tessera_checkpoint(n)
    assert signed.checkpoint.origin == TESSERA_ORIGIN
    assert signed.checkpoint.size == n
    assert signed.checkpoint.root == root_of([leaf_hash(w) for w in TESSERA_WORDS[:n]])
    assert signed.note.verified_by == (_tessera_verifier(),)


@pytest.mark.parametrize("n", range(16), ids=lambda n: f"checkpoint.{n}")
def test_tessera_checkpoint_signature_is_reproduced_byte_exact(n: int) -> None:
    signer = Signer.from_skey(_example("tessera-testdata-log-key")["signer_key_TEST_ONLY"])
    raw = (TESSERA / f"checkpoint.{n}").read_text(encoding="utf-8")
    assert sign_note(_tessera_checkpoint(n).checkpoint.body(), [signer]) == raw


def test_tessera_latest_checkpoint_is_checkpoint_15() -> None:
    assert (TESSERA / "checkpoint").read_bytes() == (TESSERA / "checkpoint.15").read_bytes()
    assert _tessera_checkpoint(0).checkpoint.root == EMPTY_ROOT


def test_tessera_checkpoint_rejects_wrong_origin_and_unknown_key() -> None:
    data = (TESSERA / "checkpoint").read_bytes()
    with pytest.raises(CheckpointError, match="origin"):
        open_checkpoint(data, "example.com/other", [_tessera_verifier()])
    with pytest.raises(CheckpointError):
        open_checkpoint(data, TESSERA_ORIGIN, [_verifier_of("c2sp-signed-note-example")])


@pytest.mark.parametrize("n", range(1, 16), ids=lambda n: f"width-{n}")
def test_tessera_partial_tiles_and_bundles(n: int) -> None:
    tile = (TESSERA / f"tile/0/000.p/{n}").read_bytes()
    assert tile == b"".join(leaf_hash(w) for w in TESSERA_WORDS[:n])
    bundle = (TESSERA / f"tile/entries/000.p/{n}").read_bytes()
    assert decode_bundle(bundle, n) == TESSERA_WORDS[:n]
    assert encode_bundle(TESSERA_WORDS[:n]) == bundle


def test_bundle_example_bytes_from_the_formats_doc() -> None:
    expected = bytes.fromhex("00036f6e6500037477 6f".replace(" ", ""))
    assert encode_bundle([b"one", b"two"]) == expected
    assert (TESSERA / "tile/entries/000.p/2").read_bytes() == expected


def test_tessera_log_reader_entries(tessera_reader: LogReader) -> None:
    assert tessera_reader.size == 15
    assert list(tessera_reader.entries()) == TESSERA_WORDS
    assert [tessera_reader.entry(i) for i in range(15)] == TESSERA_WORDS
    assert list(tessera_reader.entries(3, 7)) == TESSERA_WORDS[3:7]


def test_tessera_log_verify_all(tessera_reader: LogReader) -> None:
    seen: list[tuple[int, int]] = []
    assert tessera_reader.verify_all(lambda done, total: seen.append((done, total))) == 15
    assert seen[-1] == (15, 15)


@pytest.mark.parametrize("index", range(15), ids=lambda i: f"leaf-{i}")
def test_tessera_inclusion_proof(tessera_reader: LogReader, index: int) -> None:
    proof = tessera_reader.inclusion_proof(index)
    verify_inclusion(index, 15, leaf_hash(TESSERA_WORDS[index]), proof, tessera_reader.root_hash)
    # ... and the same proofs at every older signed size.
    for n in range(index + 1, 16):
        older = tessera_reader.inclusion_proof(index, n)
        verify_inclusion(index, n, leaf_hash(TESSERA_WORDS[index]), older, _tessera_checkpoint(n).checkpoint.root)


@pytest.mark.parametrize("n", range(16), ids=lambda n: f"from-{n}")
def test_tessera_consistency_proof(tessera_reader: LogReader, n: int) -> None:
    proof = tessera_reader.consistency_proof(n, 15)
    old_root = _tessera_checkpoint(n).checkpoint.root
    verify_consistency(n, 15, old_root, tessera_reader.root_hash, proof)
    if 0 < n < 15:
        with pytest.raises(ProofError):
            verify_consistency(n, 15, leaf_hash(b"not the old root"), tessera_reader.root_hash, proof)


@pytest.mark.parametrize("index", [0, 7, 14], ids=lambda i: f"leaf-{i}")
def test_tessera_tlog_proof_roundtrip(tessera_reader: LogReader, index: int) -> None:
    proof = tessera_reader.tlog_proof(index)
    text = proof.encode()
    assert text.startswith("c2sp.org/tlog-proof@v1\n")
    parsed = parse_tlog_proof(text)
    assert parsed == proof
    assert parse_tlog_proof(text.encode()) == proof
    signed = verify_tlog_proof(parsed, leaf_hash(TESSERA_WORDS[index]), TESSERA_ORIGIN, [_tessera_verifier()])
    assert signed.checkpoint.size == 15
    with pytest.raises(CheckpointError):
        verify_tlog_proof(parsed, leaf_hash(b"forged"), TESSERA_ORIGIN, [_tessera_verifier()])


@pytest.mark.parametrize("n", range(16), ids=lambda n: f"size-{n}")
def test_tessera_log_at_every_signed_size(tmp_path: Path, n: int) -> None:
    """Serve the log at checkpoint.n: the stale partials of larger sizes must not get in the way."""
    log = _copy_tree(TESSERA, tmp_path / "log")
    shutil.copyfile(TESSERA / f"checkpoint.{n}", log / "checkpoint")
    reader = LogReader(log, TESSERA_ORIGIN, [_tessera_verifier()])
    assert reader.size == n
    assert reader.verify_all() == n
    assert list(reader.entries()) == TESSERA_WORDS[:n]


def test_tessera_tampered_bundle_is_detected(tmp_path: Path) -> None:
    log = _copy_tree(TESSERA, tmp_path / "log")
    words = list(TESSERA_WORDS)
    words[7] = b"eight"
    (log / "tile/entries/000.p/15").write_bytes(encode_bundle(words))
    with pytest.raises(CorruptLog, match=re.escape("tile/entries/000.p/15")):
        LogReader(log, TESSERA_ORIGIN, [_tessera_verifier()]).verify_all()


# -- 6. the Sunlight mirror tree (300 leaves, cosigned) ---------------------------

SUNLIGHT_ORIGIN = "rome2026h1.example.org"
SUNLIGHT_LEAVES = [b"record %d" % i for i in range(300)]


def _mirror_verifier() -> Verifier:
    v = _verifier_of("sunlight-mirror-cosigner")
    metadata = _load_json(SUNLIGHT / "mirror.v0.json")
    assert metadata["verifier_keys"] == [v.vkey]
    assert v.sig_type == 0x04
    return v


@pytest.fixture(scope="module")
def sunlight_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = _copy_tree(SUNLIGHT, tmp_path_factory.mktemp("sunlight") / "log")
    (log / "tile/entries/001.p").mkdir(parents=True)
    (log / "tile/entries/000").write_bytes(encode_bundle(SUNLIGHT_LEAVES[:256]))
    (log / "tile/entries/001.p/44").write_bytes(encode_bundle(SUNLIGHT_LEAVES[256:]))
    return log


@pytest.fixture(scope="module")
def sunlight_reader(sunlight_log: Path) -> LogReader:
    return _mirror_reader(sunlight_log)


def _mirror_reader(log: Path) -> LogReader:
    """The log as its mirror vouches for it: the vector carries the mirror's cosignature only."""
    signed = open_checkpoint((log / "checkpoint").read_bytes(), SUNLIGHT_ORIGIN, [_mirror_verifier()], False)
    return LogReader(log, SUNLIGHT_ORIGIN, [_mirror_verifier()], signed)


def test_sunlight_cosigned_checkpoint_opens() -> None:
    # A cosigner alone never stands in for the log's own key, unless a mirror client asks for exactly that.
    with pytest.raises(CheckpointError, match="no trusted key is named after the origin"):
        open_checkpoint((SUNLIGHT / "checkpoint").read_bytes(), SUNLIGHT_ORIGIN, [_mirror_verifier()])
    signed = open_checkpoint(
        (SUNLIGHT / "checkpoint").read_bytes(), SUNLIGHT_ORIGIN, [_mirror_verifier()], require_log_key=False
    )
    cp = signed.checkpoint
    assert (cp.origin, cp.size) == (SUNLIGHT_ORIGIN, 300)
    assert cp.root == base64.b64decode("gw31yQrqZZCcEOPrzX+bpy3nJ6QgngTKn8G1m0i62uU=")
    assert cp.root == root_of([leaf_hash(e) for e in SUNLIGHT_LEAVES])
    assert signed.note.verified_by == (_mirror_verifier(),)
    (sig,) = signed.note.signatures
    assert int.from_bytes(sig.signature[:8], "big") == 1767139200


@pytest.mark.parametrize(
    ("byte", "why"),
    [
        pytest.param(6, "does not verify", id="timestamp"),
        pytest.param(40, "does not verify", id="signature"),
        pytest.param(75, "does not verify", id="last-byte"),
        pytest.param(2, "not signed by any trusted key", id="key-id"),
    ],
)
def test_sunlight_flipped_cosignature_byte_is_rejected(byte: int, why: str) -> None:
    note = (SUNLIGHT / "checkpoint").read_text(encoding="utf-8")
    bad = _flip_signature_byte(note, 0, byte)
    with pytest.raises(CheckpointError, match=why):
        open_checkpoint(bad, SUNLIGHT_ORIGIN, [_mirror_verifier()])


def test_sunlight_cosignature_is_not_a_plain_note_signature() -> None:
    """The same key bytes as a type-0x01 key must not verify a 0x04 cosignature."""
    mirror = _mirror_verifier()
    as_ed25519 = Verifier(mirror.name, mirror.key_id, 0x01, mirror.public_key)
    with pytest.raises(CheckpointError):
        open_checkpoint((SUNLIGHT / "checkpoint").read_bytes(), SUNLIGHT_ORIGIN, [as_ed25519])


def test_sunlight_hash_tiles_are_leaf_hashes() -> None:
    hashes = [leaf_hash(e) for e in SUNLIGHT_LEAVES]
    assert (SUNLIGHT / "tile/0/000").read_bytes() == b"".join(hashes[:256])
    assert (SUNLIGHT / "tile/0/001.p/44").read_bytes() == b"".join(hashes[256:])
    assert (SUNLIGHT / "tile/1/000.p/1").read_bytes() == root_of(hashes[:256])
    files = sorted(p.relative_to(SUNLIGHT).as_posix() for p in (SUNLIGHT / "tile").rglob("*") if p.is_file())
    assert files == sorted(t.path for t in tiles_for_size(300))


def test_sunlight_log_verify_all(sunlight_reader: LogReader) -> None:
    assert sunlight_reader.size == 300
    assert sunlight_reader.verify_all() == 300
    assert list(sunlight_reader.entries()) == SUNLIGHT_LEAVES
    assert sunlight_reader.entry(299) == b"record 299"


@pytest.mark.parametrize("index", [0, 1, 255, 256, 298, 299], ids=lambda i: f"leaf-{i}")
def test_sunlight_inclusion_proof(sunlight_reader: LogReader, index: int) -> None:
    proof = sunlight_reader.inclusion_proof(index)
    hashes = [leaf_hash(e) for e in SUNLIGHT_LEAVES]
    assert proof == inclusion_proof(index, 300, list_hash_range(hashes))
    verify_inclusion(index, 300, hashes[index], proof, sunlight_reader.root_hash)
    with pytest.raises(ProofError):
        verify_inclusion(index, 300, leaf_hash(b"record x"), proof, sunlight_reader.root_hash)


@pytest.mark.parametrize("old", [1, 44, 255, 256, 257, 299], ids=lambda n: f"from-{n}")
def test_sunlight_consistency_proof(sunlight_reader: LogReader, old: int) -> None:
    hashes = [leaf_hash(e) for e in SUNLIGHT_LEAVES]
    proof = sunlight_reader.consistency_proof(old)
    assert proof == consistency_proof(old, 300, list_hash_range(hashes))
    verify_consistency(old, 300, root_of(hashes[:old]), sunlight_reader.root_hash, proof)


def test_sunlight_wrong_bundle_is_detected(tmp_path: Path, sunlight_log: Path) -> None:
    log = _copy_tree(sunlight_log, tmp_path / "log")
    leaves = list(SUNLIGHT_LEAVES[:256])
    leaves[100] = b"record 1000"
    (log / "tile/entries/000").write_bytes(encode_bundle(leaves))
    with pytest.raises(CorruptLog, match="tile/entries/000"):
        _mirror_reader(log).verify_all()


# -- 7. tile paths and tile arithmetic (TLOG-FORMATS.md section 1) ---------------


@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        (0, "000"),
        (7, "007"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),
        (1_000_000, "x001/x000/000"),
    ],
)
def test_tile_index_encoding(index: int, encoded: str) -> None:
    assert encode_index(index) == encoded
    assert Tile(0, index, TILE_WIDTH).path == f"tile/0/{encoded}"
    assert Tile(-1, index, 7).path == f"tile/entries/{encoded}.p/7"


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        pytest.param(Tile(level, index, width), path, id=path)
        for level, index, width, path in [
            (0, 0, 256, "tile/0/000"),
            (0, 1, 44, "tile/0/001.p/44"),
            (1, 0, 1, "tile/1/000.p/1"),
            (63, 1234067, 255, "tile/63/x001/x234/067.p/255"),
            (-1, 0, 15, "tile/entries/000.p/15"),
            (-1, 1000, 256, "tile/entries/x001/000"),
        ]
    ],
)
def test_tile_path_roundtrip(tile: Tile, path: str) -> None:
    assert tile.path == path
    assert parse_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/01/000",  # leading zero in the level
        "tile/64/000",  # level above 63
        "tile/0/000.p/0",  # width 0
        "tile/0/000.p/256",  # width 256 is a full tile, never a partial
        "tile/0/000.p/01",  # leading zero in the width
        "tile/0/x000/001",  # leading zero group
        "tile/0/00",
        "tile/0/0000",
        "tile/0/1000",
        "tile/0/001/000",  # missing x prefix
        "tile/0/x001",  # last group has an x
        "tile/0/000/",
        "tile/0/000.p/",
        "tile/data/000",  # static-ct-api name, not tlog-tiles
        "tile/8/0/000",  # Go sumdb layout (height in the path)
        "/tile/0/000",
        "tile/-1/000",
        "tile/entries/000.p/256",
    ],
)
def test_bad_tile_path_is_rejected(path: str) -> None:
    with pytest.raises(TileError):
        parse_path(path)


@pytest.mark.parametrize(
    ("size", "paths"),
    [
        pytest.param(256, ["tile/0/000", "tile/1/000.p/1"], id="size-256"),
        pytest.param(300, ["tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1"], id="size-300"),
        pytest.param(
            70000,
            [f"tile/0/{i:03d}" for i in range(273)]
            + ["tile/0/273.p/112", "tile/1/000", "tile/1/001.p/17", "tile/2/000.p/1"],
            id="size-70000",
        ),
    ],
)
def test_tiles_for_size_worked_examples(size: int, paths: list[str]) -> None:
    tiles = list(tiles_for_size(size))
    assert [t.path for t in tiles] == paths
    assert [t.path for t in right_edge(size)] == [p for p in paths if ".p/" in p]


@pytest.mark.parametrize("size", [1, 255, 256, 300, 65536, 70000, 1001 * 256 + 3], ids=lambda n: f"size-{n}")
def test_parse_path_inverts_every_tile_of_a_tree(size: int) -> None:
    """parse_path is the inverse of Tile.path for the full and the partial tiles alike."""
    for tile in tiles_for_size(size):
        assert parse_path(tile.path) == tile
        bundle = Tile(-1, tile.index, tile.width)
        if tile.level == 0:
            assert parse_path(bundle.path) == bundle
