// tlog.js: the transparency log's checks in the browser, ported from verifier/cpl_verify.py (its library half)
// with the same rules, so a page and the Python verifier reach the same verdicts. One job, no framework, no
// build step, no dependency: cryptography only through WebCrypto (SHA-256 with crypto.subtle.digest, Ed25519
// with crypto.subtle.verify); never a primitive of our own. An ES module (the check page imports it).
//
// Sections, in the Python file's order (each names the Python it ports):
//   bytes          hex, strict base64 (CPython's a2b_base64 in strict mode), UTF-8 without BOM stripping
//   Merkle trees   RFC 9162 leaf/node hashes, roots, inclusion and consistency proofs (leaf_hash ... verify_consistency)
//   signed notes   C2SP signed-note: verifier keys, parse_note, open_note (Verifier, check_note_chars)
//   checkpoints    C2SP tlog-checkpoint: parse_body, open_checkpoint (the log's own key named after the origin)
//   witnessing     C2SP tlog-policy parse_policy and Policy, tlog-cosignature check_witnessing
//   tiles          C2SP tlog-tiles: paths, tile arithmetic, bundles, fetch_tile, TileFetcher (blame), proofs
//   the site       Site: GETs under the log's URL, size caps, retries on 5xx, same-origin redirects only
//   the log        latest (the checkpoint against the remembered one: consistency, fork, rollback, _keep_newer)
//   the lookup     lookup/v1 commitment, shards checked against it (LookupView), inclusion by image hash
// Everything is read-only and makes GET requests to the site only.

const enc = new TextEncoder();

export const HASH_SIZE = 32;
export const TILE_HEIGHT = 8;
export const TILE_WIDTH = 256;
export const SIG_ED25519 = 0x01;
export const SIG_COSIGNATURE_ED25519 = 0x04;
export const EM_DASH = "\u2014";
export const MAX_SIGNATURES = 100;
export const COSIGNATURE_SKEW = 600;
export const MAX_POLICY_ITEMS = 256;
const KIB = 1024;
const MIB = 1024 * KIB;
export const CAP_CHECKPOINT = 64 * KIB;
export const CAP_SMALL = 1 * MIB;
export const CAP_LOOKUP = 16 * MIB;
export const CAP_BUNDLE = TILE_WIDTH * (2 + 0xffff);
export const RETRIES = 3;
export const ASSOCIATION_TYPE = "cpl-association/v1";
export const CRL_TYPE = "crl/v1";
export const LOOKUP_TYPE = "lookup/v1";
export const LOOKUP_KINDS = ["hash", "model"];
export const SHARD_HEX = 3;
export const SHARDS = 4096;
export const LOOKUP_LEAVES = LOOKUP_KINDS.length * SHARDS;
export const LOOKUP_TILES = LOOKUP_LEAVES / TILE_WIDTH;
export const LOOKUP_COMMITMENT = "lookup/commitment";
const EMPTY_SHARD = enc.encode("{}");
const HEX64 = /^[0-9a-f]{64}$/;

// Errors: one class, its ``kind`` names the Python exception it stands for. A kind in FAILED means the site's
// data does not verify (the Python verifier's exit 1); "fetch" and "usage" mean nothing was concluded (exit 2).
export class TlogError extends Error {
  constructor(kind, message, extra) {
    super(message);
    this.name = "TlogError";
    this.kind = kind;
    Object.assign(this, extra || {});
  }
}
function fail(kind, message, extra) { throw new TlogError(kind, message, extra); }
const NOTE_KINDS = ["note", "bad-signature", "unverified"];
export const FAILED_KINDS = ["proof", "note", "bad-signature", "unverified", "checkpoint", "forged-checkpoint",
  "forged-cosignature", "untrusted", "no-log-signature", "wrong-origin", "tile", "failed", "site", "not-served",
  "lookup-mismatch", "fork", "rollback", "quorum", "policy"];

// ---- bytes ------------------------------------------------------------------------------------------------

export function hex(bytes) {
  let s = "";
  for (const b of bytes) { s += (b < 16 ? "0" : "") + b.toString(16); }
  return s;
}
export function fromHex(text) {
  if (!/^([0-9a-fA-F]{2})*$/.test(text)) { fail("usage", "not hex"); }
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) { out[i] = parseInt(text.substr(2 * i, 2), 16); }
  return out;
}
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) { out.set(p, pos); pos += p.length; }
  return out;
}
export function equal(a, b) {
  if (!a || !b || a.length !== b.length) { return false; }
  for (let i = 0; i < a.length; i++) { if (a[i] !== b[i]) { return false; } }
  return true;
}
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
export function b64encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
    s += B64[n >> 18] + B64[(n >> 12) & 63];
    s += i + 1 < bytes.length ? B64[(n >> 6) & 63] : "=";
    s += i + 2 < bytes.length ? B64[n & 63] : "=";
  }
  return s;
}
// Python's base64.b64decode(text.encode("ascii"), validate=True), which is CPython's a2b_base64 in strict
// mode: only the alphabet, no leading "=", no data after the padding, padding where a quad needs it.
export function b64decodeStrict(text, what) {
  const bad = () => fail("note", `${what} is not valid base64`);
  if (text.length > 0 && text[0] === "=") { bad(); }
  const out = [];
  let quad = 0, acc = 0, pads = 0, padding = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "=") {
      padding = true;
      if (quad >= 2 && quad + ++pads >= 4) {
        if (i + 1 < text.length) { bad(); }
        return new Uint8Array(out);
      }
      continue;
    }
    const v = B64.indexOf(c);
    if (v < 0) { bad(); }
    if (padding) { bad(); }
    pads = 0;
    acc = (acc << 6) | v;
    quad = (quad + 1) % 4;
    if (quad === 2) { out.push((acc >> 4) & 0xff); acc &= 0xf; }
    else if (quad === 3) { out.push((acc >> 2) & 0xff); acc &= 0x3; }
    else if (quad === 0) { out.push(acc & 0xff); acc = 0; }
  }
  if (quad !== 0) { bad(); }
  return new Uint8Array(out);
}
// UTF-8, strictly, keeping a byte order mark (Python's bytes.decode("utf-8") keeps it too).
export function utf8(bytes, what) {
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (e) {
    return fail("note", `${what} is not valid UTF-8`);
  }
}
// Python's str.isspace() and str.strip(): Unicode whitespace as Python defines it (JavaScript's \s differs).
const PY_SPACE = "\t\n\u000b\u000c\r\u001c\u001d\u001e\u001f \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004" +
  "\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000";
function hasSpace(text) { for (const c of text) { if (PY_SPACE.includes(c)) { return true; } } return false; }
function pyStrip(text) {
  let a = 0, b = text.length;
  while (a < b && PY_SPACE.includes(text[a])) { a++; }
  while (b > a && PY_SPACE.includes(text[b - 1])) { b--; }
  return text.slice(a, b);
}
// Unicode category Cc: U+0000-U+001F and U+007F-U+009F.
function controlAt(text, allowed) {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 || (c >= 0x7f && c <= 0x9f)) && !allowed.includes(text[i])) { return i; }
  }
  return -1;
}
function bitLength(x) { return x === 0n ? 0 : x.toString(2).length; }
function popcount(x) { return x.toString(2).split("1").length - 1; }

// ---- Merkle trees (RFC 9162), SHA-256 from WebCrypto --------------------------------------------------------

export async function sha256(data) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", data));
}
export const EMPTY_ROOT = fromHex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
export function leafHash(entry) { return sha256(concat(Uint8Array.of(0), entry)); }
export function nodeHash(left, right) { return sha256(concat(Uint8Array.of(1), left, right)); }
export function splitPoint(n) {
  let k = 1;
  while (k * 2 < n) { k *= 2; }
  return k;
}
function isPow2(n) { return n > 0 && splitPoint(n + 1) === n; }

export async function rootOf(hashes) {
  if (hashes.length === 0) { return EMPTY_ROOT; }
  if (isPow2(hashes.length)) {
    let level = hashes;
    while (level.length > 1) {
      const pairs = [];
      for (let i = 0; i < level.length; i += 2) { pairs.push(nodeHash(level[i], level[i + 1])); }
      level = await Promise.all(pairs);
    }
    return level[0];
  }
  const stack = [];
  for (let h of hashes) {
    let height = 0;
    while (stack.length && stack[stack.length - 1][0] === height) {
      h = await nodeHash(stack.pop()[1], h);
      height++;
    }
    stack.push([height, h]);
  }
  let acc = stack.pop()[1];
  while (stack.length) { acc = await nodeHash(stack.pop()[1], acc); }
  return acc;
}

export async function inclusionProof(index, size, hashRange) {
  if (!(index >= 0 && index < size)) { fail("proof", `leaf index ${index} is outside a tree of size ${size}`); }
  const path = [];
  let start = 0, end = size;
  while (end - start > 1) {
    const k = splitPoint(end - start);
    if (index < start + k) { path.push(await hashRange(start + k, end)); end = start + k; }
    else { path.push(await hashRange(start, start + k)); start += k; }
  }
  return path.reverse();
}

export async function consistencyProof(oldSize, newSize, hashRange) {
  if (!(oldSize >= 0 && oldSize <= newSize)) { fail("proof", `cannot prove size ${oldSize} consistent with size ${newSize}`); }
  if (oldSize === 0 || oldSize === newSize) { return []; }
  const proof = [];
  let start = 0, end = newSize, m = oldSize, complete = true;
  for (;;) {
    const n = end - start;
    if (m === n) {
      if (!complete) { proof.push(await hashRange(start, end)); }
      break;
    }
    const k = splitPoint(n);
    if (m <= k) { proof.push(await hashRange(start + k, end)); end = start + k; }
    else { proof.push(await hashRange(start, start + k)); start += k; m -= k; complete = false; }
  }
  return proof.reverse();
}

function checkHash(value, what) {
  if (!(value instanceof Uint8Array) || value.length !== HASH_SIZE) {
    fail("proof", `${what} is ${value ? value.length : 0} bytes, expected ${HASH_SIZE}`);
  }
}

export async function rootFromInclusionProof(index, size, leaf, proof) {
  if (!(index >= 0 && index < size)) { fail("proof", `leaf index ${index} is outside a tree of size ${size}`); }
  checkHash(leaf, "leaf hash");
  proof.forEach((p, i) => checkHash(p, `proof hash ${i}`));
  const i = BigInt(index), s = BigInt(size);
  const inner = bitLength(i ^ (s - 1n));
  const border = popcount(i >> BigInt(inner));
  if (proof.length !== inner + border) {
    fail("proof", `inclusion proof has ${proof.length} hashes, expected ${inner + border} for leaf ${index} in a tree of size ${size}`);
  }
  let acc = leaf;
  for (let k = 0; k < inner; k++) {
    acc = (i >> BigInt(k)) & 1n ? await nodeHash(proof[k], acc) : await nodeHash(acc, proof[k]);
  }
  for (const p of proof.slice(inner)) { acc = await nodeHash(p, acc); }
  return acc;
}

export async function verifyInclusion(index, size, leaf, proof, root) {
  checkHash(root, "root");
  if (!equal(await rootFromInclusionProof(index, size, leaf, proof), root)) {
    fail("proof", `inclusion proof for leaf ${index} does not lead to the tree root`);
  }
}

export async function verifyConsistency(oldSize, newSize, oldRoot, newRoot, proof) {
  checkHash(oldRoot, "old root");
  checkHash(newRoot, "new root");
  proof.forEach((p, i) => checkHash(p, `proof hash ${i}`));
  if (newSize < oldSize) { fail("proof", `new size ${newSize} is smaller than old size ${oldSize}`); }
  if (oldSize === 0 && !equal(oldRoot, EMPTY_ROOT)) { fail("proof", "a tree of size 0 must have the empty root (SHA-256 of nothing)"); }
  if (oldSize === newSize) {
    if (proof.length) { fail("proof", "sizes are equal but the consistency proof is not empty"); }
    if (!equal(oldRoot, newRoot)) { fail("proof", `two different roots for the same tree size ${oldSize}`); }
    return;
  }
  if (oldSize === 0) {
    if (proof.length) { fail("proof", "consistency proof from the empty tree must be empty"); }
    return;
  }
  if (!proof.length) { fail("proof", "consistency proof is empty"); }
  const o = BigInt(oldSize), n = BigInt(newSize);
  let inner = bitLength((o - 1n) ^ (n - 1n));
  const shift = bitLength(o & -o) - 1;
  inner -= shift;
  let seed = proof[0], start = 1;
  if (o === 1n << BigInt(shift)) { seed = oldRoot; start = 0; }
  const rest = proof.slice(start);
  const mask = (o - 1n) >> BigInt(shift);
  const border = popcount(mask >> BigInt(inner));
  if (rest.length !== inner + border) {
    fail("proof", `consistency proof has ${proof.length} hashes, wrong length for sizes ${oldSize} -> ${newSize}`);
  }
  let acc = seed;
  for (let k = 0; k < inner; k++) { if ((mask >> BigInt(k)) & 1n) { acc = await nodeHash(rest[k], acc); } }
  for (const p of rest.slice(inner)) { acc = await nodeHash(p, acc); }
  if (!equal(acc, oldRoot)) { fail("proof", `consistency proof does not lead to the old root (size ${oldSize})`); }
  acc = seed;
  for (let k = 0; k < inner; k++) {
    acc = (mask >> BigInt(k)) & 1n ? await nodeHash(rest[k], acc) : await nodeHash(acc, rest[k]);
  }
  for (const p of rest.slice(inner)) { acc = await nodeHash(p, acc); }
  if (!equal(acc, newRoot)) { fail("proof", `consistency proof does not lead to the new root (size ${newSize})`); }
}

// ---- signed notes (C2SP signed-note) ----------------------------------------------------------------------

export function checkKeyName(name) {
  if (!name || name.includes("+") || hasSpace(name) || controlAt(name, "") >= 0) {
    fail("note", `invalid key name ${JSON.stringify(name)}`);
  }
}

export async function keyId(name, sigType, publicKey) {
  const digest = await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(sigType), publicKey));
  return new DataView(digest.buffer).getUint32(0, false);
}
function hex8(n) { return n.toString(16).padStart(8, "0"); }

// A verifier key ``<name>+<8 hex key id>+<base64(type || key)>``: {name, keyId, sigType, publicKey, vkey}.
export async function parseVkey(vkey) {
  const text = pyStrip(vkey);
  const first = text.indexOf("+"), second = first < 0 ? -1 : text.indexOf("+", first + 1);
  if (second < 0) { fail("note", "verifier key must be <name>+<hex key id>+<base64 key>"); }
  const name = text.slice(0, first), hexId = text.slice(first + 1, second), b64 = text.slice(second + 1);
  checkKeyName(name);
  if (!/^[0-9a-f]{8}$/.test(hexId)) { fail("note", `verifier key ID ${JSON.stringify(hexId)} is not 8 lowercase hex digits`); }
  const raw = b64decodeStrict(b64, "verifier key");
  if (!raw.length) { fail("note", "verifier key is empty"); }
  const sigType = raw[0], publicKey = raw.slice(1);
  if (sigType !== SIG_ED25519 && sigType !== SIG_COSIGNATURE_ED25519) {
    fail("note", `unsupported verifier key type 0x${sigType.toString(16).padStart(2, "0")}`);
  }
  if (publicKey.length !== 32) { fail("note", `Ed25519 public key is ${publicKey.length} bytes, expected 32`); }
  const expected = await keyId(name, sigType, publicKey);
  if (parseInt(hexId, 16) !== expected) {
    fail("note", `verifier key ID ${hexId} does not match the key (expected ${hex8(expected)})`);
  }
  return { name, keyId: expected, sigType, publicKey, vkey: `${name}+${hex8(expected)}+${b64encode(raw)}` };
}

async function ed25519Verify(v, signature, message) {
  let key = v.cryptoKey;
  if (!key) {
    try {
      key = await crypto.subtle.importKey("raw", v.publicKey, { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      fail("usage", `this browser cannot verify Ed25519 signatures with WebCrypto (${e.name}); use the Python verifier`);
    }
    v.cryptoKey = key;
  }
  try {
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch (e) {
    return false;
  }
}

// Verifier.verify: raise unless ``signature`` (without its key ID) signs ``text``.
export async function verifySignature(v, text, signature) {
  let message = enc.encode(text);
  if (v.sigType === SIG_COSIGNATURE_ED25519) {
    if (signature.length !== 72) { fail("bad-signature", `cosignature by ${v.name} is ${signature.length} bytes, expected 72`, { key: v }); }
    const timestamp = new DataView(signature.buffer, signature.byteOffset, 8).getBigUint64(0, false);
    if (timestamp >= 1n << 63n) { fail("bad-signature", `cosignature by ${v.name} has an invalid timestamp`, { key: v }); }
    message = concat(enc.encode(`cosignature/v1\ntime ${timestamp}\n`), message);
    signature = signature.slice(8);
  } else if (signature.length !== 64) {
    fail("bad-signature", `signature by ${v.name} is ${signature.length} bytes, expected 64`, { key: v });
  }
  if (!(await ed25519Verify(v, signature, message))) {
    fail("bad-signature", `signature by ${v.name} (key ${hex8(v.keyId)}) does not verify`, { key: v });
  }
}

// parse_note: a signed note, parsed strictly but not verified: {text, signatures: [{name, keyId, signature}]}.
export function parseNote(data) {
  const note = typeof data === "string" ? data : utf8(data, "note");
  const bad = controlAt(note, "\n");
  if (bad >= 0) {
    fail("note", `note contains control character U+${note.charCodeAt(bad).toString(16).toUpperCase().padStart(4, "0")} at offset ${bad}`);
  }
  if (!note.endsWith("\n")) { fail("note", "note does not end with a newline"); }
  const split = note.lastIndexOf("\n\n");
  if (split < 0) { fail("note", "note has no blank line before its signatures"); }
  const text = note.slice(0, split + 1);
  const lines = note.slice(split + 2).split("\n").slice(0, -1);
  if (!lines.length) { fail("note", "note has no signature lines"); }
  if (lines.length > MAX_SIGNATURES) { fail("note", `note has more than ${MAX_SIGNATURES} signatures`); }
  const signatures = lines.map((line, i) => {
    const n = i + 1;
    if (!line.startsWith(EM_DASH + " ")) { fail("note", `signature line ${n} does not start with an em dash and a space`); }
    const fields = line.slice(2).split(" ");
    if (fields.length !== 2) { fail("note", `signature line ${n} must be '\u2014 <name> <base64>'`); }
    checkKeyName(fields[0]);
    const raw = b64decodeStrict(fields[1], `signature line ${n}`);
    if (raw.length < 5) { fail("note", `signature line ${n} is too short`); }
    return { name: fields[0], keyId: new DataView(raw.buffer).getUint32(0, false), signature: raw.slice(4) };
  });
  return { text, signatures };
}

// open_note: unknown signers are ignored, a known signer whose signature fails (or is malformed) rejects the
// note, and at least one trusted key must verify it. Returns the note with ``verifiedBy``.
export async function openNote(data, verifiers) {
  const note = parseNote(data);
  const byId = new Map(verifiers.map((v) => [`${v.name}\n${v.keyId}`, v]));
  const verified = [];
  for (const sig of note.signatures) {
    const v = byId.get(`${sig.name}\n${sig.keyId}`);
    if (!v) { continue; }
    await verifySignature(v, note.text, sig.signature);
    if (!verified.includes(v)) { verified.push(v); }
  }
  if (!verified.length) {
    fail("unverified", `note is not signed by any trusted key (trusted: ${verifiers.map((v) => v.name).join(", ") || "none"})`);
  }
  return { text: note.text, signatures: note.signatures, verifiedBy: verified };
}

// ---- checkpoints (C2SP tlog-checkpoint) ---------------------------------------------------------------------

export function parseBody(text) {
  if (!text.endsWith("\n")) { fail("checkpoint", "checkpoint text does not end with a newline"); }
  const lines = text.slice(0, -1).split("\n");
  if (lines.length < 3) { fail("checkpoint", "checkpoint needs an origin, a tree size and a root hash"); }
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!origin || hasSpace(origin)) { fail("checkpoint", `invalid checkpoint origin ${JSON.stringify(origin)}`); }
  if (!/^(0|[1-9][0-9]{0,19})$/.test(sizeText) || BigInt(sizeText) >= 1n << 63n) {
    fail("checkpoint", `invalid tree size ${JSON.stringify(sizeText)}`);
  }
  if (BigInt(sizeText) > BigInt(Number.MAX_SAFE_INTEGER)) { fail("usage", `a tree of size ${sizeText} is too large for this page`); }
  let root;
  try { root = b64decodeStrict(rootText, "checkpoint root hash"); } catch (e) { fail("checkpoint", e.message); }
  if (root.length !== HASH_SIZE) { fail("checkpoint", `checkpoint root hash is ${root.length} bytes, expected ${HASH_SIZE}`); }
  if (extensions.some((line) => !line)) { fail("checkpoint", "checkpoint has an empty extension line"); }
  return { origin, size: Number(sizeText), root, extensions };
}

// open_checkpoint: {checkpoint, note, raw}. The log's own signature is a type 0x01 trusted key named after the
// origin; other trusted keys count only as cosigners, never in its place.
export async function openCheckpoint(data, origin, verifiers) {
  let raw, note;
  try {
    raw = typeof data === "string" ? data : utf8(data, "checkpoint");
    note = await openNote(raw, verifiers);
  } catch (e) {
    if (!(e instanceof TlogError) || !NOTE_KINDS.includes(e.kind)) { throw e; }
    if (e.kind === "bad-signature") {
      const cosig = e.key && e.key.sigType === SIG_COSIGNATURE_ED25519;
      fail(cosig ? "forged-cosignature" : "forged-checkpoint", `checkpoint: ${e.message}`);
    }
    fail(e.kind === "unverified" ? "untrusted" : "checkpoint", `checkpoint: ${e.message}`);
  }
  const checkpoint = parseBody(note.text);
  if (checkpoint.origin !== origin) {
    fail("wrong-origin", `checkpoint is for origin ${JSON.stringify(checkpoint.origin)}, expected ${JSON.stringify(origin)}`);
  }
  const isLog = (v) => v.name === origin && v.sigType === SIG_ED25519;
  if (!note.verifiedBy.some(isLog)) {
    if (!verifiers.some(isLog)) {
      fail("checkpoint", `no trusted key is named after the origin ${JSON.stringify(origin)}: pin the log's own key`);
    }
    fail("no-log-signature", `checkpoint carries no valid signature of the log key ${JSON.stringify(origin)}`);
  }
  return { checkpoint, note, raw };
}

// ---- witnessing (C2SP tlog-policy, tlog-cosignature) ----------------------------------------------------------

// parse_policy, strictly: names defined before use, one quorum line, no key listed twice, no witness counted
// twice within a group. Returns {logs, witnesses, groups, quorum} with the methods of Python's Policy.
export async function parsePolicy(data) {
  const logs = [], witnesses = [], groups = [];
  let quorum = null;
  const keys = new Set(), ids = new Set();
  const under = (name) => {
    const g = groups.find((x) => x.name === name);
    return g ? g.members.flatMap(under) : [name];
  };
  const lines = data.split("\n");
  for (let n = 1; n <= lines.length; n++) {
    const line = lines[n - 1];
    const bad = [...line].find((c) => c !== "\t" && (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f));
    if (bad !== undefined) { fail("policy", `line ${n}: control character U+${bad.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}`); }
    const words = line.replace(/^[ \t]+|[ \t]+$/g, "").split(/[ \t]+/);
    if ((words.length === 1 && words[0] === "") || words[0].startsWith("#")) { continue; }
    const names = new Set([...witnesses.map((w) => w.name), ...groups.map((g) => g.name)]);
    const [keyword, ...rest] = words;
    const vkey = async (text, sigType) => {
      let v;
      try { v = await parseVkey(text); } catch (e) { fail("policy", `line ${n}: ${e.message}`); }
      if (v.sigType !== sigType) {
        fail("policy", `line ${n}: ` + (sigType === SIG_ED25519 ? "a log key must be an Ed25519 note key (type 0x01)"
          : "a witness key must be an Ed25519 cosignature key (type 0x04)"));
      }
      const pk = hex(v.publicKey), id = `${v.name}\n${v.keyId}`;
      if (keys.has(pk) || ids.has(id)) { fail("policy", `line ${n}: the key ${v.vkey} wraps a public key, or has a name and ID, listed earlier`); }
      keys.add(pk);
      ids.add(id);
      return v;
    };
    if (keyword === "log" && (rest.length === 1 || rest.length === 2)) {
      logs.push({ verifier: await vkey(rest[0], SIG_ED25519), url: rest[1] || null });
    } else if (keyword === "witness" && (rest.length === 2 || rest.length === 3)) {
      if (rest[0] === "none" || names.has(rest[0])) { fail("policy", `line ${n}: the name ${JSON.stringify(rest[0])} is reserved or already defined`); }
      witnesses.push({ name: rest[0], verifier: await vkey(rest[1], SIG_COSIGNATURE_ED25519), url: rest[2] || null });
    } else if (keyword === "group" && rest.length >= 3) {
      const [name, k, ...members] = rest;
      if (name === "none" || names.has(name)) { fail("policy", `line ${n}: the name ${JSON.stringify(name)} is reserved or already defined`); }
      const unknown = members.filter((m) => !names.has(m));
      if (unknown.length) { fail("policy", `line ${n}: group ${name} names ${unknown.join(", ")}, not defined on an earlier line`); }
      if (new Set(members).size !== members.length) { fail("policy", `line ${n}: group ${name} lists a member twice`); }
      const seen = new Set();
      for (const m of members) {
        const twice = under(m).filter((w) => seen.has(w));
        if (twice.length) { fail("policy", `line ${n}: group ${name} would count ${twice.sort().join(", ")} twice`); }
        under(m).forEach((w) => seen.add(w));
      }
      let threshold;
      if (k === "any" || k === "all") { threshold = k === "any" ? 1 : members.length; }
      else if (/^[1-9][0-9]{0,3}$/.test(k) && Number(k) <= members.length) { threshold = Number(k); }
      else { fail("policy", `line ${n}: group ${name}'s threshold ${JSON.stringify(k)} must be any, all or 1 to ${members.length}`); }
      groups.push({ name, threshold, members });
    } else if (keyword === "quorum" && rest.length === 1) {
      if (quorum !== null) { fail("policy", `line ${n}: a second quorum line`); }
      if (rest[0] !== "none" && !names.has(rest[0])) { fail("policy", `line ${n}: the quorum ${JSON.stringify(rest[0])} is not defined on an earlier line`); }
      quorum = rest[0];
    } else {
      fail("policy", `line ${n}: expected 'log <vkey> [url]', 'witness <name> <vkey> [url]', 'group <name> <k|any|all> <member>...' or 'quorum <name|none>'`);
    }
    if (Math.max(logs.length, witnesses.length, groups.length) > MAX_POLICY_ITEMS) {
      fail("policy", `more than ${MAX_POLICY_ITEMS} logs, witnesses or groups`);
    }
  }
  if (quorum === null) { fail("policy", "the policy has no quorum line ('quorum none' asks for no cosignatures)"); }
  const group = (name) => groups.find((g) => g.name === name);
  const witnessed = (name, cosigned) => {
    if (name === "none") { return true; }
    const g = group(name);
    if (!g) { return cosigned.has(name); }
    return g.members.filter((m) => witnessed(m, cosigned)).length >= g.threshold;
  };
  const describe = (name) => {
    const g = group(name);
    if (!g) { return name; }
    const inner = g.members.map(describe).join(", ");
    const k = g.threshold === g.members.length && g.members.length > 1 ? "all" : String(g.threshold);
    return `${k} of (${inner})`;
  };
  return {
    logs, witnesses, groups, quorum,
    satisfied: (cosigned) => witnessed(quorum, new Set(cosigned)),
    counted: () => (quorum === "none" ? [] : [...new Set(under(quorum))]),
    describe: () => describe(quorum),
  };
}

// check_witnessing: the quorum counts cosignatures by the policy's witnesses that verified (openNote had their
// keys) and are dated at most ``skew`` seconds after ``now``; a witness that cosigned twice counts once.
export function checkWitnessing(note, policy, now, skew = COSIGNATURE_SKEW) {
  const found = new Map();
  const future = [];
  const verified = new Set(note.verifiedBy.map((v) => `${v.name}\n${v.keyId}`));
  for (const sig of note.signatures) {
    const w = policy.witnesses.find((x) => x.verifier.name === sig.name && x.verifier.keyId === sig.keyId);
    if (!w || !verified.has(`${sig.name}\n${sig.keyId}`)) { continue; }
    if (sig.signature.length !== 72) { fail("note", `cosignature by ${sig.name} is ${sig.signature.length} bytes, expected 72`); }
    const t = new DataView(sig.signature.buffer, sig.signature.byteOffset, 8).getBigUint64(0, false);
    const c = { name: w.name, vkey: w.verifier.vkey, timestamp: Number(t) };
    if (t > BigInt(now + skew)) { future.push(c); }
    else if (!found.has(w.name) || found.get(w.name).timestamp < c.timestamp) { found.set(w.name, c); }
  }
  const cosigned = policy.witnesses.filter((w) => found.has(w.name)).map((w) => found.get(w.name));
  const missing = policy.counted().filter((name) => !found.has(name));
  return { cosigned, future, satisfied: policy.satisfied(found.keys()), missing, quorum: policy.describe() };
}

export function isoTime(seconds) {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

// ---- tiles (C2SP tlog-tiles) ---------------------------------------------------------------------------------

export function encodeIndex(n) {
  const groups = [String(n % 1000).padStart(3, "0")];
  n = Math.floor(n / 1000);
  while (n) { groups.push("x" + String(n % 1000).padStart(3, "0")); n = Math.floor(n / 1000); }
  return groups.reverse().join("/");
}
// A hash tile (level >= 0) or, with level -1, an entry bundle; width 1..256 (256: full).
export function tile(level, index, width) {
  const full = width === TILE_WIDTH;
  const path = `tile/${level < 0 ? "entries" : level}/${encodeIndex(index)}${full ? "" : ".p/" + width}`;
  return { level, index, width, full, path };
}
export function levelWidth(size, level) { return Math.floor(size / TILE_WIDTH ** level); }
export function tileFor(level, index, size) {
  const count = levelWidth(size, Math.max(level, 0)) - index * TILE_WIDTH;
  if (count <= 0) { fail("tile", `tile ${level}/${index} is empty in a tree of size ${size}`); }
  return tile(level, index, Math.min(count, TILE_WIDTH));
}
export function rightEdge(size) {
  const tiles = [];
  for (let level = 0; levelWidth(size, level) > 0; level++) {
    const count = levelWidth(size, level);
    if (count % TILE_WIDTH) { tiles.push(tile(level, Math.floor(count / TILE_WIDTH), count % TILE_WIDTH)); }
  }
  return tiles;
}
export function splitHashes(data, t) {
  if (data.length !== t.width * HASH_SIZE) { fail("tile", `${t.path}: ${data.length} bytes, expected ${t.width * HASH_SIZE}`); }
  const out = [];
  for (let i = 0; i < data.length; i += HASH_SIZE) { out.push(data.slice(i, i + HASH_SIZE)); }
  return out;
}
export function decodeBundle(data, expected, name) {
  const entries = [];
  let pos = 0;
  while (pos < data.length) {
    if (pos + 2 > data.length) { fail("tile", `${name}: truncated length prefix at byte ${pos}`); }
    const n = (data[pos] << 8) | data[pos + 1];
    pos += 2;
    if (pos + n > data.length) { fail("tile", `${name}: entry ${entries.length} is truncated`); }
    entries.push(data.slice(pos, pos + n));
    pos += n;
  }
  if (expected !== null && entries.length !== expected) { fail("tile", `${name}: holds ${entries.length} entries, expected ${expected}`); }
  return entries;
}

// tile_hash_range: MTH(D[start:end]) from tiles, reading only the tiles on the way.
export function tileHashRange(size, readTile) {
  async function complete(start, height) {
    const level = Math.floor(height / TILE_HEIGHT), count = 2 ** (height % TILE_HEIGHT);
    const pos = Math.floor(start / TILE_WIDTH ** level);
    const hashes = await readTile(tileFor(level, Math.floor(pos / TILE_WIDTH), size));
    const offset = pos % TILE_WIDTH;
    return rootOf(hashes.slice(offset, offset + count));
  }
  async function hashRange(start, end) {
    if (!(start >= 0 && start < end && end <= size)) { fail("tile", `range ${start}..${end} is outside a tree of size ${size}`); }
    const n = end - start;
    if (isPow2(n) && start % n === 0) { return complete(start, Math.round(Math.log2(n))); }
    const k = splitPoint(n);
    return nodeHash(await hashRange(start, start + k), await hashRange(start + k, end));
  }
  return hashRange;
}

export async function rootFromRightEdge(size, edge) {
  if (size === 0) { return EMPTY_ROOT; }
  const subtrees = [];
  for (const level of Object.keys(edge).map(Number).sort((a, b) => b - a)) {
    const hashes = edge[level];
    let pos = 0;
    while (pos < hashes.length) {
      const k = splitPoint(hashes.length - pos + 1);
      subtrees.push(await rootOf(hashes.slice(pos, pos + k)));
      pos += k;
    }
  }
  let acc = subtrees.pop();
  while (subtrees.length) { acc = await nodeHash(subtrees.pop(), acc); }
  return acc;
}

// fetch_tile, the one partial-tile reader: a partial tile the site no longer serves is cut from the full one.
export async function fetchTile(site, t) {
  const bundle = t.level < 0;
  const data = await site.read(t.path, bundle ? CAP_BUNDLE : t.width * HASH_SIZE);
  if (data !== null || t.full) { return data; }
  const full = await site.read(tile(t.level, t.index, TILE_WIDTH).path, bundle ? CAP_BUNDLE : TILE_WIDTH * HASH_SIZE);
  if (full === null) { return null; }
  if (!bundle) { return full.length === TILE_WIDTH * HASH_SIZE ? full.slice(0, t.width * HASH_SIZE) : null; }
  let entries;
  try { entries = decodeBundle(full, TILE_WIDTH, t.path); } catch (e) { return null; }
  return full.slice(0, entries.slice(0, t.width).reduce((n, e) => n + 2 + e.length, 0));
}

// TileFetcher: the tiles and bundles of one tree size, each fetched at most once.
export class TileFetcher {
  constructor(site, size) {
    this.site = site;
    this.size = size;
    this.tiles = new Map(); // "level/index" -> hashes
    this.bundles = new Map();
    this.bundleHashes = new Map();
    this.useBundles = true;
  }
  async publishedTile(t) {
    const key = `${t.level}/${t.index}`;
    if (this.tiles.has(key)) { return this.tiles.get(key); }
    const data = await fetchTile(this.site, t);
    if (data === null) {
      fail("not-served", `the site does not serve ${t.path}, which its signed checkpoint (size ${this.size}) implies; the log cannot be checked`);
    }
    let hashes;
    try { hashes = splitHashes(data, t); } catch (e) {
      fail("failed", `the site serves a truncated or padded hash tile: ${e.message}; the log's data is damaged or tampered with`);
    }
    this.tiles.set(key, hashes);
    return hashes;
  }
  readTile(t) {
    if (this.useBundles && t.level === 0 && this.bundleHashes.has(t.index)) { return Promise.resolve(this.bundleHashes.get(t.index)); }
    return this.publishedTile(t);
  }
  async bundle(index) {
    if (this.bundles.has(index)) { return this.bundles.get(index); }
    const t = tileFor(-1, index, this.size);
    const data = await fetchTile(this.site, t);
    if (data === null) { fail("not-served", `the site does not serve the entry bundle ${t.path}, which its checkpoint implies`); }
    let entries;
    try { entries = decodeBundle(data, t.width, t.path); } catch (e) { fail("failed", `the site serves a malformed entry bundle: ${e.message}`); }
    this.bundles.set(index, entries);
    this.bundleHashes.set(index, await Promise.all(entries.map(leafHash)));
    return entries;
  }
  hashRange() { return tileHashRange(this.size, (t) => this.readTile(t)); }

  // Which file disagrees with the signed root (after a proof failed): the right edge against the root, then the
  // tiles fetched so far against their parents, then the bundles against their level-0 tiles.
  async blame(root) {
    if (this.size === 0) { return "the checkpoint is for an empty tree"; }
    const edge = {};
    try {
      for (const t of rightEdge(this.size)) { edge[t.level] = await this.publishedTile(t); }
    } catch (e) {
      if (e instanceof TlogError && FAILED_KINDS.includes(e.kind)) { return e.message; }
      throw e;
    }
    if (!equal(await rootFromRightEdge(this.size, edge), root)) {
      const paths = rightEdge(this.size).map((t) => t.path).join(", ");
      return `the right-edge hash tiles (${paths}) do not lead to the signed root: one of them was altered`;
    }
    const good = new Map(rightEdge(this.size).map((t) => [`${t.level}/${t.index}`, edge[t.level]]));
    const fetched = [...this.tiles.entries()].map(([k, h]) => [k.split("/").map(Number), h]).sort((a, b) => b[0][0] - a[0][0]);
    for (const [[level, index], hashes] of fetched) {
      if (hashes.length !== TILE_WIDTH) { continue; }
      const up = `${level + 1}/${Math.floor(index / TILE_WIDTH)}`;
      const parent = good.get(up) || this.tiles.get(up);
      if (!parent || index % TILE_WIDTH >= parent.length) { continue; }
      if (!equal(await rootOf(hashes), parent[index % TILE_WIDTH])) {
        return `the hash tile ${tile(level, index, TILE_WIDTH).path} does not match its hash in the level above`;
      }
      good.set(`${level}/${index}`, hashes);
    }
    for (const index of [...this.bundleHashes.keys()].sort((a, b) => a - b)) {
      const leaves = this.bundleHashes.get(index);
      const t = tileFor(0, index, this.size);
      const published = await this.publishedTile(t);
      const n = Math.min(leaves.length, published.length);
      let bad = -1;
      for (let i = 0; i < n && bad < 0; i++) { if (!equal(leaves[i], published[i])) { bad = i; } }
      if (bad < 0 && leaves.length !== published.length) { bad = n; }
      if (bad >= 0) {
        return `the entry bundle ${tileFor(-1, index, this.size).path} does not match the log: entry ` +
          `${index * TILE_WIDTH + bad} was altered (its leaf hash is not the one in ${t.path})`;
      }
    }
    return "the hash tiles served do not lead to the signed root";
  }
}

// prove_leaf: the leaf hash ``leaf`` is at ``index`` under the signed checkpoint, from hash tiles only.
export async function proveLeaf(fetcher, signed, index, leaf, what) {
  const cp = signed.checkpoint;
  if (!(index >= 0 && index < cp.size)) { fail("failed", `log index ${index} is outside the log (size ${cp.size})`); }
  fetcher.useBundles = false;
  const proof = await inclusionProof(index, cp.size, fetcher.hashRange());
  try {
    await verifyInclusion(index, cp.size, leaf, proof, cp.root);
  } catch (e) {
    if (!(e instanceof TlogError) || e.kind !== "proof") { throw e; }
    const published = (await fetcher.publishedTile(tileFor(0, Math.floor(index / TILE_WIDTH), cp.size)))[index % TILE_WIDTH];
    if (!equal(published, leaf) && equal(await rootFromInclusionProof(index, cp.size, published, proof), cp.root)) {
      fail("failed", `${what} is not entry ${index} of the log (its leaf hash differs)`);
    }
    fail("failed", `entry ${index} cannot be proved: ${await fetcher.blame(cp.root)}`);
  }
}

// prove_entry: entry ``index`` from its bundle, authenticated by an inclusion proof against the checkpoint.
export async function proveEntry(fetcher, signed, index) {
  const cp = signed.checkpoint;
  if (!(index >= 0 && index < cp.size)) { fail("failed", `log index ${index} is outside the log (size ${cp.size})`); }
  const entry = (await fetcher.bundle(Math.floor(index / TILE_WIDTH)))[index % TILE_WIDTH];
  const proof = await inclusionProof(index, cp.size, fetcher.hashRange());
  try {
    await verifyInclusion(index, cp.size, await leafHash(entry), proof, cp.root);
  } catch (e) {
    if (!(e instanceof TlogError) || e.kind !== "proof") { throw e; }
    fail("failed", `entry ${index} is not proved to be in the log: ${await fetcher.blame(cp.root)}; the site's data is damaged or tampered with`);
  }
  return entry;
}

// ---- the site ------------------------------------------------------------------------------------------------

// The log's files under ``base`` (a URL ending in "/"): GET only, credentials omitted, redirects only within the
// site's origin, at most ``cap`` bytes per response (counted after any Content-Encoding), 5xx retried.
export class Site {
  constructor(base, fetchImpl) {
    this.base = new URL(base);
    this.fetch = fetchImpl || ((url, init) => fetch(url, init));
    this.requests = 0;
  }
  url(rel, query) {
    const u = new URL(rel, this.base);
    if (query) { u.search = query; }
    return u;
  }
  async get(rel, cap, what, query, cache) {
    if (rel.startsWith("/") || rel.split("/").includes("..") || rel.includes("\\")) { fail("usage", `refusing to fetch ${rel}`); }
    const url = this.url(rel, query);
    for (let attempt = 1; ; attempt++) {
      let r;
      this.requests++;
      try {
        r = await this.fetch(url, { method: "GET", credentials: "omit", cache: cache || "default", redirect: "follow" });
      } catch (e) {
        fail("fetch", `${what}: ${url} could not be fetched (${e.message})`);
      }
      if (r.redirected && new URL(r.url).origin !== this.base.origin) {
        fail("site", `${what}: the site redirected ${url} to ${r.url}, outside the site`);
      }
      if (r.status >= 500 && r.status <= 599) {
        if (attempt < RETRIES) { await new Promise((ok) => setTimeout(ok, 250 * 2 ** (attempt - 1))); continue; }
        fail("fetch", `${what}: ${url} answered HTTP ${r.status} ${attempt} times; try again later`);
      }
      if (r.status === 404 || r.status === 410) { fail("not-found", `${what}: ${url} does not exist (HTTP ${r.status})`); }
      if (r.status !== 200) { fail("fetch", `${what}: ${url} answered HTTP ${r.status}`); }
      return readCapped(r, cap, `${what}: ${url}`);
    }
  }
  async getOptional(rel, cap, what, query, cache) {
    try {
      return await this.get(rel, cap, what, query, cache);
    } catch (e) {
      if (e instanceof TlogError && e.kind === "not-found") { return null; }
      throw e;
    }
  }
  read(path, cap) {
    const kind = path.startsWith("tile/entries/") ? "entry bundle " : path.startsWith("tile/") ? "hash tile " : "";
    return this.getOptional(path, cap, kind + path);
  }
}

async function readCapped(response, cap, what) {
  if (response.body === null) { return new Uint8Array(0); }
  const reader = response.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) { break; }
    total += value.length;
    if (total > cap) {
      reader.cancel().catch(() => {});
      fail("site", `${what} is larger than ${cap} bytes`);
    }
    chunks.push(value);
  }
  return concat(...chunks);
}

// ---- the log: the checkpoint, and the one remembered from last time -----------------------------------------

// A client of one log: ``origin``, the pinned ``vkey`` and, when witnesses exist, the ``policy`` (tlog-policy
// text); ``store`` remembers the last verified checkpoint ({get(), set(raw)}: the page's localStorage).
// The checkpoint this browser last verified for a log, in its local storage: one memory for every page that
// verifies (the check page, the entry page), so a visit to either proves the log only grew since the last.
export function checkpointMemory(origin) {
  const key = "cpl-check/checkpoint/" + origin;
  return {
    get() { try { return window.localStorage.getItem(key); } catch (e) { return null; } },
    set(raw) { try { window.localStorage.setItem(key, raw); } catch (e) { /* storage disabled: no memory */ } },
    forget() { try { window.localStorage.removeItem(key); } catch (e) { /* nothing remembered */ } },
  };
}

export class Client {
  static async create({ base, origin, vkey, policy, store, fetchImpl, now }) {
    const log = await parseVkey(vkey);
    if (log.sigType !== SIG_ED25519 || log.name !== origin) {
      fail("usage", `the log key built into the page (${log.vkey}) is not an Ed25519 key named after the origin ${origin}`);
    }
    const pol = policy ? await parsePolicy(policy) : null;
    if (pol && pol.logs.some((l) => l.verifier.vkey !== log.vkey)) { fail("usage", "the witness policy names another log key"); }
    const verifiers = [log, ...(pol ? pol.witnesses.map((w) => w.verifier) : [])];
    return new Client(new Site(base, fetchImpl), origin, verifiers, pol, store, now);
  }
  constructor(site, origin, verifiers, policy, store, now) {
    this.site = site;
    this.origin = origin;
    this.verifiers = verifiers;
    this.policy = policy;
    this.store = store || { get: () => null, set: () => {} };
    this.now = now || (() => Math.floor(Date.now() / 1000));
  }

  // verify_checkpoint_note + check_quorum: the signatures, then the witness policy.
  async verifyCheckpoint(data, where) {
    let signed;
    try {
      signed = await openCheckpoint(data, this.origin, this.verifiers);
    } catch (e) {
      if (!(e instanceof TlogError)) { throw e; }
      const meaning = {
        "forged-cosignature": "a cosignature made with a witness key's ID does not verify: it was forged, altered, or copied from another checkpoint",
        "forged-checkpoint": "a signature made with the log key's ID does not verify: the checkpoint was forged or altered",
        "no-log-signature": "it lacks the log key's signature",
        untrusted: "it is not signed by the log key built into this page (another key signed it, or none did)",
        "wrong-origin": "it is a checkpoint of another log (unknown origin)",
      }[e.kind] || "it is malformed";
      fail(e.kind === "usage" ? "usage" : e.kind, `${where}: ${e.message}; ${meaning}. Trust nothing the site says about the log.`);
    }
    signed.witnessing = null;
    if (this.policy) {
      const w = checkWitnessing(signed.note, this.policy, this.now());
      signed.witnessing = w;
      if (!w.satisfied) {
        const said = w.cosigned.map((c) => `${c.name} at ${isoTime(c.timestamp)}`).join(", ") || "no witness";
        fail("quorum", `${where}: the checkpoint of size ${signed.checkpoint.size} is cosigned by ${said}; the witness policy ` +
          `needs ${w.quorum}. Missing: ${w.missing.join(", ") || "none"}. A checkpoint the witnesses have not seen may be ` +
          "a split view shown to you alone: do not rely on it (retry later: cosignatures may still be on their way)", { witnessing: w });
      }
    }
    return signed;
  }

  // check_consistent: ``old`` is a prefix of ``newer``, proved from the site's tiles; a fork fails loudly.
  async checkConsistent(fetcher, old, newer, oldWhere, newWhere) {
    const o = old.checkpoint, n = newer.checkpoint;
    const evidence = { old: old.raw, new: newer.raw, oldWhere, newWhere };
    if (n.size < o.size) {
      fail("rollback", `rollback: the checkpoint ${newWhere} has size ${n.size}, smaller than the size ${o.size} ${oldWhere}; ` +
        "the log may never shrink", { evidence });
    }
    if (n.size === o.size) {
      if (!equal(n.root, o.root)) {
        fail("fork", `fork: two different trees of the same size ${n.size} are both signed by the log key (${oldWhere}, ${newWhere})`, { evidence });
      }
      return;
    }
    if (o.size === 0) {
      if (!equal(o.root, EMPTY_ROOT)) { fail("failed", "the remembered size-0 checkpoint does not carry the empty root"); }
      return;
    }
    const proof = await consistencyProof(o.size, n.size, fetcher.hashRange());
    try {
      await verifyConsistency(o.size, n.size, o.root, n.root, proof);
    } catch (e) {
      if (!(e instanceof TlogError) || e.kind !== "proof") { throw e; }
      if (!equal(await fetcher.hashRange()(0, n.size), n.root)) {
        fail("failed", `cannot prove consistency: ${await fetcher.blame(n.root)}; the site's tiles are damaged or tampered with`);
      }
      fail("fork", `fork: the checkpoint of size ${n.size} ${newWhere} does not extend the one of size ${o.size} ${oldWhere} ` +
        `(${e.message}); the log rewrote its history`, { evidence: { ...evidence, proof: proof.map(b64encode) } });
    }
  }

  // latest_checkpoint: the site's checkpoint, verified, and proved consistent with the remembered one (or, when
  // the site serves an older one, proved a prefix of it: a cached copy, and the remembered one is used).
  // Returns {signed, fetcher, consistency: {kind: first|same|proved|older-served, from, to}}.
  async latest() {
    const data = await this.site.get("checkpoint", CAP_CHECKPOINT, "the log's checkpoint", "", "no-cache");
    let signed = await this.verifyCheckpoint(data, "the site's checkpoint");
    let fetcher = new TileFetcher(this.site, signed.checkpoint.size);
    const remembered = this.store.get();
    let consistency = { kind: "first", from: null, to: signed.checkpoint.size };
    if (remembered) {
      let old;
      try {
        old = await openCheckpoint(remembered, this.origin, this.verifiers);
      } catch (e) {
        if (!(e instanceof TlogError)) { throw e; }
        fail("usage", `the checkpoint remembered in this browser does not verify with the key built into this page (${e.message}); ` +
          "did the key change? Forget the remembered checkpoint to start afresh");
      }
      const [o, n] = [old.checkpoint.size, signed.checkpoint.size];
      if (n < o) {
        const newer = new TileFetcher(this.site, o);
        try {
          await this.checkConsistent(newer, signed, old, "served now", "remembered from your last visit");
        } catch (e) {
          if (e instanceof TlogError && e.kind === "not-served") {
            fail("fetch", `the site serves an older checkpoint (size ${n}) than the one remembered from your last visit (size ${o}) ` +
              `and lacks the newer tree's tiles (${e.message}); this is what a stale cache looks like: retry in a few minutes`);
          }
          throw e;
        }
        consistency = { kind: "older-served", from: n, to: o };
        signed = old; // accepted on the last visit, its quorum then included; shown, not judged again (as --state)
        signed.witnessing = this.policy ? checkWitnessing(old.note, this.policy, this.now()) : null;
        fetcher = newer;
      } else {
        await this.checkConsistent(fetcher, old, signed, "remembered from your last visit", "served now");
        consistency = { kind: n === o ? "same" : "proved", from: o, to: n };
        this.store.set(signed.raw);
      }
    } else {
      this.store.set(signed.raw);
    }
    this.current = { signed, fetcher, consistency };
    return this.current;
  }

  // refresh_latest: the checkpoint again, past any cache; true if it is newer (and consistent) and now in use.
  async refresh() {
    const { signed: old } = this.current;
    const data = await this.site.get("checkpoint", CAP_CHECKPOINT, "the log's checkpoint", `fresh=${Date.now()}`, "reload");
    const signed = await this.verifyCheckpoint(data, "the site's checkpoint");
    if (signed.checkpoint.size <= old.checkpoint.size) { return false; }
    const fetcher = new TileFetcher(this.site, signed.checkpoint.size);
    await this.checkConsistent(fetcher, old, signed, "served before", "served now");
    this.store.set(signed.raw);
    this.current = { signed, fetcher, consistency: { ...this.current.consistency, to: signed.checkpoint.size, refreshed: true } };
    return true;
  }

  // cmd_inclusion for an image hash: on a lookup that disagrees with the commitment (a cache serving lookup files
  // newer than its checkpoint), the checkpoint is fetched again once.
  async inclusion(image) {
    if (!this.current) { await this.latest(); }
    try {
      return await inclusion(this.site, this.current, image);
    } catch (e) {
      if (!(e instanceof TlogError) || e.kind !== "lookup-mismatch" || !(await this.refresh())) { throw e; }
      return inclusion(this.site, this.current, image);
    }
  }
}

// ---- the lookup (lookup/v1) and the inclusion verdict ----------------------------------------------------------

// parse_entry: a log entry as a JSON object, or null.
export function parseEntry(raw) {
  let obj;
  try { obj = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(raw)); } catch (e) { return null; }
  return obj !== null && typeof obj === "object" && !Array.isArray(obj) ? obj : null;
}
const own = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);
const get = (obj, key) => (obj && own(obj, key) ? obj[key] : undefined);
const isPlain = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

export function shardPath(kind, key) { return `lookup/${kind}/${key.slice(0, SHARD_HEX)}.json`; }
export function lookupTilePath(level, index) { return `lookup/tile/${level}/${String(index).padStart(3, "0")}`; }
function shardLeaf(kind, key) { return LOOKUP_KINDS.indexOf(kind) * SHARDS + parseInt(key.slice(0, SHARD_HEX), 16); }
export async function modelLookupKey(mid, model, hw, fw) { return hex(await sha256(enc.encode(`${mid}\n${model}\n${hw}\n${fw}`))); }

// parse_commitment: entry ``index`` as a lookup commitment {index, root, crls}, or null if it is not one.
export function parseCommitment(index, raw) {
  const entry = parseEntry(raw);
  if (entry === null || get(entry, "type") !== LOOKUP_TYPE) { return null; }
  const root = get(entry, "root"), crls = get(entry, "crls");
  if (get(entry, "size") !== index || typeof root !== "string" || !HEX64.test(root)) {
    fail("site", `the log's lookup/v1 entry ${index} is malformed (size or root)`);
  }
  if (!isPlain(crls) || !Object.values(crls).every((v) => isPlain(v) && Number.isInteger(get(v, "number")) && Number.isInteger(get(v, "index")))) {
    fail("site", `the log's lookup/v1 entry ${index} is malformed (crls)`);
  }
  return { index, root: fromHex(root), crls };
}

export function parseShard(data, rel) {
  let table;
  try { table = JSON.parse(utf8(data, `the lookup shard ${rel}`)); } catch (e) { fail("site", `the lookup shard ${rel} is not valid JSON`); }
  if (!isPlain(table) || !Object.values(table).every((v) => Array.isArray(v) && v.every(Number.isInteger))) {
    fail("site", `the lookup shard ${rel} is not a table of keys to log indices`);
  }
  return table;
}

// latest_commitment: the lookup/v1 entry that ends the log, proved (from the copy at lookup/commitment and hash
// tiles, else from its bundle); null when the last entry is another.
export async function latestCommitment(site, fetcher, signed) {
  const index = signed.checkpoint.size - 1;
  if (index < 0) { return null; }
  const copy = await site.getOptional(LOOKUP_COMMITMENT, CAP_SMALL, "the lookup commitment");
  let raw = null;
  if (copy !== null) {
    try {
      await proveLeaf(fetcher, signed, index, await leafHash(copy), "the site's lookup/commitment");
      raw = copy;
    } catch (e) {
      if (!(e instanceof TlogError) || !FAILED_KINDS.includes(e.kind)) { throw e; }
      // a copy from another moment (caches): the entry's bundle settles it
    }
  }
  return parseCommitment(index, raw !== null ? raw : await proveEntry(fetcher, signed, index));
}

// LookupView, with the commitment only: each shard read is checked against the committed root with two small
// lookup tiles, so the indices it lists are complete. (A log without a commitment is not judged here: the
// Python verifier reads every entry of such a log instead.)
export class LookupView {
  static async open(site, fetcher, signed) {
    const commitment = await latestCommitment(site, fetcher, signed);
    if (commitment === null) {
      fail("usage", "this log's last entry is not a lookup/v1 commitment, so this page cannot prove what is current " +
        "or absent; run the Python verifier (it reads every entry of a small log, or says NOT PROVEN)");
    }
    return new LookupView(site, fetcher, signed, commitment);
  }
  constructor(site, fetcher, signed, commitment) {
    Object.assign(this, { site, fetcher, signed, commitment, tile1: null });
    this.version = `lookup=${commitment.index}`;
  }
  async lookupTile(level, index, count) {
    const rel = lookupTilePath(level, index);
    const data = await this.site.get(rel, count * HASH_SIZE, `lookup tile ${rel}`, this.version);
    if (data.length !== count * HASH_SIZE) { fail("site", `the lookup tile ${rel} has ${data.length} bytes, not ${count * HASH_SIZE}`); }
    const out = [];
    for (let i = 0; i < data.length; i += HASH_SIZE) { out.push(data.slice(i, i + HASH_SIZE)); }
    return out;
  }
  async indices(kind, key) {
    const rel = shardPath(kind, key);
    const data = await this.site.getOptional(rel, CAP_LOOKUP, `lookup shard ${rel}`, this.version);
    const shard = data === null ? EMPTY_SHARD : data;
    const leaf = shardLeaf(kind, key);
    if (this.tile1 === null) { this.tile1 = await this.lookupTile(1, 0, LOOKUP_TILES); }
    const tile0 = await this.lookupTile(0, Math.floor(leaf / TILE_WIDTH), TILE_WIDTH);
    if (!equal(await rootOf(this.tile1), this.commitment.root) ||
        !equal(await rootOf(tile0), this.tile1[Math.floor(leaf / TILE_WIDTH)]) ||
        !equal(tile0[leaf % TILE_WIDTH], await leafHash(shard))) {
      fail("lookup-mismatch", `the lookup shard ${rel}${data === null ? " (the site does not serve it)" : ""} does not match the ` +
        `log's signed lookup commitment (entry ${this.commitment.index}): the site's lookup was altered, or it is mid-update (retry in a few minutes)`);
    }
    const table = parseShard(shard, rel);
    const hits = own(table, key) ? table[key] : [];
    const size = this.signed.checkpoint.size;
    for (const i of hits) {
      if (!(i >= 0 && i < size)) { fail("site", `the lookup shard ${rel} lists index ${i}, outside the signed log (size ${size})`); }
    }
    return [...new Set(hits)].sort((a, b) => a - b);
  }
  async entry(index) { return parseEntry(await proveEntry(this.fetcher, this.signed, index)); }
}

// Python's str() of a JSON value, for the device model's fields (_model_of).
function pyStr(v) {
  if (typeof v === "string") { return v; }
  if (v === null || v === undefined) { return v === null ? "None" : ""; }
  if (typeof v === "boolean") { return v ? "True" : "False"; }
  return typeof v === "number" ? String(v) : JSON.stringify(v);
}
export function modelOf(entry) {
  const m = get(entry, "device_model");
  if (!isPlain(m)) { return ["", "", "", ""]; }
  return ["manufacturer_id", "model_id", "hardware_version", "firmware_version"].map((k) => pyStr(own(m, k) ? m[k] : ""));
}
const party = (entry, key) => (isPlain(get(entry, key)) ? entry[key] : {});

// describe_association: what is shown of an association entry.
export function describeAssociation(index, entry) {
  const [mid, model, hw, fw] = modelOf(entry);
  const man = party(entry, "manufacturer"), end = party(entry, "endorser");
  const out = {
    index,
    image_sha256: get(entry, "image_sha256"),
    device_model: { manufacturer_id: mid, model_id: model, hardware_version: hw, firmware_version: fw },
    device_type: get(entry, "device_type"),
    smets_version: get(entry, "smets_version"),
    manufacturer_name: get(entry, "manufacturer_name"),
    manufacturer: { organisation: get(man, "organisation"), organisation_id: get(man, "organisation_id") },
    endorser: { organisation: get(end, "organisation"), organisation_id: get(end, "organisation_id"), role: get(end, "role") },
    approved_at: get(entry, "approved_at"),
    panel_ref: get(entry, "panel_ref"),
    submission_id: get(entry, "submission_id"),
  };
  if (isPlain(get(entry, "replaces"))) { out.replaces = entry.replaces; }
  return out;
}

// _annotate (without the signers' standing, which needs the CRLs): the first later association of the same
// device model, proved, replaces this one; a later one that does not name it is reported.
async function annotate(view, a) {
  const m = a.device_model;
  const key = await modelLookupKey(m.manufacturer_id, m.model_id, m.hardware_version, m.firmware_version);
  const later = (await view.indices("model", key)).filter((i) => i > a.index);
  a.replaced_by = null;
  a.warnings = [];
  for (const j of later) {
    const other = await view.entry(j);
    const wanted = Object.values(m);
    const same = other !== null && modelOf(other).every((v, k) => v === wanted[k]);
    if (other === null || get(other, "type") !== ASSOCIATION_TYPE || !same) {
      fail("site", `the model lookup lists index ${j}, which is not an association of this model`);
    }
    if (a.replaced_by === null) {
      a.replaced_by = j;
      a.replacement = describeAssociation(j, other);
      const rep = get(other, "replaces");
      if (!isPlain(rep) || get(rep, "index") !== a.index) {
        a.warnings.push(`entry ${j} associates another hash with the model of entry ${a.index} without naming it as replaced ` +
          "(run the Python verifier's 'audit' to check the whole history)");
      }
    }
  }
  a.current = a.replaced_by === null;
  a.verdict = a.current ? "current" : "replaced";
}

// _inclusion for an image hash: every association the verified lookup lists for it, each proved and annotated.
// The verdict: current, replaced, mixed (current for one device model, replaced for another) or not-found.
export async function inclusion(site, latest, image) {
  if (!HEX64.test(image)) { fail("usage", "the image hash must be 64 lowercase hex digits"); }
  const { signed, fetcher } = latest;
  const view = await LookupView.open(site, fetcher, signed);
  const found = [];
  for (const index of await view.indices("hash", image)) {
    const entry = await view.entry(index);
    const type = entry === null ? null : get(entry, "type");
    if (type !== ASSOCIATION_TYPE) {
      if (type === CRL_TYPE) { continue; } // a CRL with this SHA-256, not a firmware image
      fail("site", `the site's hash lookup points at log index ${index}, which is not an association`);
    }
    if (get(entry, "image_sha256") !== image) {
      fail("site", `the site's lookup points at log index ${index} for image ${image}, but that entry (verified) is for image ` +
        `${get(entry, "image_sha256")}: the lookup is wrong or tampered with`);
    }
    const a = describeAssociation(index, entry);
    await annotate(view, a);
    found.push(a);
  }
  const verdicts = [...new Set(found.map((a) => a.verdict))];
  return {
    image,
    checkpoint: { size: signed.checkpoint.size, root: b64encode(signed.checkpoint.root), raw: signed.raw },
    commitmentIndex: view.commitment.index,
    associations: found,
    verdict: !found.length ? "not-found" : verdicts.length === 1 ? verdicts[0] : "mixed",
  };
}

// parse_image_hash: HEX, sha256:HEX or a sha256sum line; null when it is none of them.
export function parseImageHash(text) {
  let value = pyStrip(text);
  if (value.toLowerCase().startsWith("sha256:")) { value = value.slice(7); }
  const words = value.split(new RegExp(`[${PY_SPACE}]+`)).filter(Boolean);
  value = (words[0] || "").replace(/^\\+/, "").toLowerCase();
  return HEX64.test(value) ? value : null;
}
