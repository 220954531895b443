// entry.js: the entry page (/entry/?i=<log index>). tlog.js proves the entry included under the checkpoint (the
// log key and witness policy built into the page, the checkpoint this browser remembers from the check page
// proved extended), then the page shows every field, the replacement chain both ways (from the proved lookup),
// the evidence files with their SHA-256, the signers' certificates with the revocations the site lists, and
// offers the entry's offline proof (a c2sp.org/tlog-proof@v1 file built here). textContent only.
import * as tlog from "./tlog.js";

const root = document.getElementById("cpl-entry");

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) { e.textContent = String(text); }
  if (cls) { e.className = cls; }
  return e;
}
function link(text, href) { const a = el("a", text); a.href = href; return a; }
function entryLink(index) { return link(`log index ${index}`, `?i=${encodeURIComponent(String(index))}`); }
function para(...parts) {
  const p = el("p");
  for (const x of parts) { p.appendChild(typeof x === "string" ? document.createTextNode(x) : x); }
  return p;
}

// Every field of the entry, nested objects flattened to dotted names, in the entry's own order.
function fields(entry) {
  const dl = el("dl", null, "cpl-check-fields");
  (function walk(obj, prefix) {
    for (const [k, v] of Object.entries(obj)) {
      const name = prefix ? `${prefix}.${k}` : k;
      if (v !== null && typeof v === "object" && !Array.isArray(v)) { walk(v, name); continue; }
      dl.appendChild(el("dt", name));
      dl.appendChild(el("dd", Array.isArray(v) ? v.join(", ") : v === null ? "(none)" : String(v)));
    }
  })(entry, "");
  return dl;
}

async function proofFile(current, index, raw) {
  const { signed, fetcher } = current;
  const proof = await tlog.inclusionProof(index, signed.checkpoint.size, fetcher.hashRange());
  const lines = ["c2sp.org/tlog-proof@v1", `extra ${tlog.b64encode(raw)}`, `index ${index}`, ...proof.map(tlog.b64encode)];
  return lines.join("\n") + "\n\n" + signed.raw;
}

async function signers(entry, revokedUrl) {
  const out = el("div");
  const listed = await fetch(revokedUrl, { credentials: "omit" }).then((r) => (r.ok ? r.json() : []), () => []);
  const byCert = new Map((Array.isArray(listed) ? listed : []).map((r) => [String(r.certificate_sha256), r]));
  for (const role of ["manufacturer", "endorser"]) {
    const p = entry[role];
    if (!p || typeof p !== "object") { continue; }
    const r = byCert.get(String(p.certificate_sha256));
    out.appendChild(el("h3", `${role === "manufacturer" ? "Manufacturer" : "Endorser"}: ${p.organisation} (ID ${p.organisation_id})`));
    out.appendChild(para("Certificate SHA-256: ", el("code", p.certificate_sha256, "cpl-hash")));
    out.appendChild(r
      ? para(el("strong", "REVOKED", "cpl-bad"), ` by ${r.issuer} at ${r.revoked_at} (${r.reason}` +
          (r.invalidity_date ? `, invalid since ${r.invalidity_date}` : "") + `), serial ${r.serial}.`)
      : para(el("strong", "not revoked", "cpl-ok"), " according to the revocations this site lists."));
  }
  out.appendChild(el("p", "Revocation status comes from the site's list of the revocations it published (/revocations.json), " +
    "not from the signed CRLs: the Python verifier checks the signers against the CRLs (cpl-verify inclusion --index N)."));
  return out;
}

async function main() {
  if (!root) { return; }
  const result = document.getElementById("cpl-entry-result");
  const text = new URLSearchParams(window.location.search).get("i") || "";
  const show = (verdict, parts) => {
    result.replaceChildren(...parts);
    result.setAttribute("data-verdict", verdict);
    result.removeAttribute("aria-busy");
  };
  if (!/^(0|[1-9][0-9]{0,15})$/.test(text)) {
    show("usage", [el("p", "Give a log index: this page's address ends in ?i=<log index>, for example ?i=0.")]);
    return;
  }
  const index = Number(text);
  const origin = root.getAttribute("data-origin");
  const base = new URL(root.getAttribute("data-log"), document.baseURI).href;
  try {
    const client = await tlog.Client.create({
      base, origin, vkey: root.getAttribute("data-vkey"), policy: root.getAttribute("data-policy") || null, store: tlog.checkpointMemory(origin),
    });
    const current = await client.latest();
    const size = current.signed.checkpoint.size;
    if (index >= size) {
      show("not-found", [el("p", `The log has ${size} entries (indices 0 to ${size - 1}): there is no entry ${index}.`)]);
      return;
    }
    const raw = await tlog.proveEntry(current.fetcher, current.signed, index);
    const entry = tlog.parseEntry(raw);
    const w = current.signed.witnessing;
    const parts = [
      el("h2", `Log entry ${index}`),
      el("p", `Proved included in the checkpoint of size ${size} (RFC 9162 inclusion proof from the log's tiles), signed by ` +
        "the log key built into this page" + (w ? `, cosigned by ${w.cosigned.map((c) => c.name).join(", ") || "no witness"} ` +
        `(policy ${w.quorum}: ${w.satisfied ? "met" : "NOT met"})` : "") + "."),
    ];
    if (entry === null) {
      parts.push(el("p", "The entry is not a JSON object; its bytes, in base64:"), el("pre", tlog.b64encode(raw), "cpl-key"));
      show("entry", parts);
      return;
    }
    parts.push(el("h3", `Type: ${entry.type}`), fields(entry));
    let verdict = "entry";
    if (entry.type === tlog.ASSOCIATION_TYPE) {
      const res = await client.inclusion(String(entry.image_sha256));
      const a = res.associations.find((x) => x.index === index);
      parts.push(el("h2", "History"));
      if (entry.replaces && typeof entry.replaces === "object") {
        parts.push(para("It replaces ", entryLink(entry.replaces.index), ` (investigation ${entry.replaces.investigation_ref}).`));
      }
      if (a && a.replaced_by !== null) {
        verdict = "replaced";
        parts.push(para(el("strong", "Replaced", "cpl-bad"), " by ", entryLink(a.replaced_by),
          ": a later association of the same device model, proved included too."));
      } else if (a) {
        verdict = "current";
        parts.push(para(el("strong", "Current", "cpl-ok"), ": no later association of this device model is in the log " +
          "(proved from the log's signed lookup)."));
      }
      for (const warning of a ? a.warnings : []) { parts.push(el("p", "Note: " + warning, "cpl-warn")); }
      const evidence = entry.evidence || {};
      const files = [["spreadsheet", evidence.spreadsheet], ["request", evidence.request],
        ...(Array.isArray(evidence.signatures) ? evidence.signatures : []).map((d) => ["signatures", d])];
      parts.push(el("h2", "Evidence"), el("p", "The submission's files as the log holds them; each file's name is its SHA-256:"));
      const ul = el("ul");
      for (const [what, digest] of files) {
        if (typeof digest !== "string" || !/^[0-9a-f]{64}$/.test(digest)) { continue; }
        const li = el("li");
        li.append(link(what, new URL(`evidence/${digest}`, base).href), " · SHA-256 ", el("code", digest, "cpl-hash"));
        ul.appendChild(li);
      }
      parts.push(ul, el("h2", "Signers"), await signers(entry, new URL("../revocations.json", base).href));
    }
    const button = el("button", "Download the offline proof", "md-button");
    button.type = "button";
    button.id = "cpl-entry-proof";
    button.addEventListener("click", async () => {
      const file = await proofFile(current, index, raw);
      const a = link("", URL.createObjectURL(new Blob([file], { type: "text/plain" })));
      a.download = `${index}.tlog-proof`;
      document.body.appendChild(a);
      a.click();
      a.remove();
    });
    parts.push(el("h2", "Offline proof"), el("p", "A c2sp.org/tlog-proof@v1 file with this entry, its inclusion proof and the " +
      "signed checkpoint: check it anywhere with cpl-verify inclusion --proof FILE."), button);
    show(verdict, parts);
  } catch (err) {
    const known = err instanceof tlog.TlogError;
    show("failed", [el("p", null, "cpl-check-verdict").appendChild(el("strong", "FAILED", "cpl-bad")).parentNode,
      el("p", (known && tlog.FAILED_KINDS.includes(err.kind) ? "Verification failed: " : "Nothing was concluded: ") +
        (err && err.message))]);
  }
}

main();
