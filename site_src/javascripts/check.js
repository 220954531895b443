// check.js: the check page (/check/). A file chosen here is hashed in the browser, in pieces (the vendored
// @noble/hashes SHA-256, cross-checked against WebCrypto when the page loads), and never uploaded; then tlog.js
// proves what the log says about the hash against the key and witness policy built into the page, and the page
// shows the verdict in #cpl-check-result's data-verdict: current, replaced, mixed, not-found or failed.
// Everything shown is written with textContent, never as HTML.
import * as tlog from "./tlog.js";
import { sha256 } from "../vendor/noble-hashes-2.4.0/sha2.js";

const root = document.getElementById("cpl-check");
const CHUNK = 4 * 1024 * 1024; // bytes read at a time: memory stays bounded whatever the file's size

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) { e.textContent = String(text); }
  if (cls) { e.className = cls; }
  return e;
}
function shown(v) { return v === undefined || v === null ? "(none)" : String(v); }
function mib(n) { return (n / (1024 * 1024)).toFixed(1) + " MiB"; }

// The vendored hash must agree with the browser's own SHA-256 before it is trusted with a file.
async function selfTest() {
  if (!window.crypto || !window.crypto.subtle) {
    throw new tlog.TlogError("usage", "this browser offers no WebCrypto here (it needs a secure, https page); use the Python verifier");
  }
  const samples = [new Uint8Array(0), new TextEncoder().encode("abc"), new Uint8Array(200003).map((_, i) => (i * 7) & 255)];
  for (const s of samples) {
    const h = sha256.create();
    for (let pos = 0; pos < s.length; pos += 65537) { h.update(s.subarray(pos, pos + 65537)); }
    if (tlog.hex(h.digest()) !== tlog.hex(await tlog.sha256(s))) {
      throw new tlog.TlogError("usage", "the page's SHA-256 library disagrees with this browser's WebCrypto; use the Python verifier");
    }
  }
}

async function hashFile(file, progress) {
  const h = sha256.create();
  for (let pos = 0; pos < file.size; pos += CHUNK) {
    const part = new Uint8Array(await file.slice(pos, pos + CHUNK).arrayBuffer());
    h.update(part);
    progress(Math.min(pos + part.length, file.size), file.size);
  }
  return tlog.hex(h.digest());
}

function definitionList(pairs) {
  const dl = el("dl", null, "cpl-check-fields");
  for (const [label, value] of pairs) {
    dl.appendChild(el("dt", label));
    dl.appendChild(el("dd", shown(value)));
  }
  return dl;
}

function entryFields(a) {
  const m = a.device_model;
  const rows = [
    ["Device model", `${m.model_id} (hardware ${m.hardware_version}, firmware ${m.firmware_version}; ` +
      `${shown(a.device_type)}, ${shown(a.smets_version)})`],
    ["Manufacturer", `${shown(a.manufacturer.organisation)} (ID ${shown(a.manufacturer.organisation_id)})`],
    ["Endorsed by", `${shown(a.endorser.organisation)} (ID ${shown(a.endorser.organisation_id)}, ${shown(a.endorser.role)})`],
    ["Approved (UTC)", a.approved_at],
    ["Panel reference", a.panel_ref],
    ["Submission ID", a.submission_id],
    ["Log index", a.index],
  ];
  if (a.replaces) { rows.push(["Replaces", `log index ${shown(a.replaces.index)} (investigation ${shown(a.replaces.investigation_ref)})`]); }
  return definitionList(rows);
}

function witnessLine(signed) {
  const w = signed && signed.witnessing;
  if (!w) { return "This log has no witnesses: the log's signature alone was checked."; }
  const who = w.cosigned.map((c) => `${c.name} (${tlog.isoTime(c.timestamp)})`).join(", ") || "no witness";
  return `Cosigned by ${who}; the witness policy, ${w.quorum}, is ${w.satisfied ? "met" : "NOT met (missing: " + w.missing.join(", ") + ")"}.`;
}

function consistencyLine(c) {
  if (c.kind === "first") {
    return `First check from this browser: the checkpoint of size ${c.to} is now remembered, and your next visit ` +
      "proves the log only grew since.";
  }
  if (c.kind === "same") { return `The same checkpoint (size ${c.to}) as your last visit.`; }
  if (c.kind === "proved") {
    return `Consistent with the checkpoint of size ${c.from} remembered from your last visit: the log only grew ` +
      `(to size ${c.to}; consistency proof verified).`;
  }
  return `The site serves an older checkpoint (size ${c.from}) than the one remembered from your last visit ` +
    `(size ${c.to}), probably a cached copy: it is proved a prefix of the remembered one, which is used instead.`;
}

function main() {
  if (!root) { return; }
  const result = document.getElementById("cpl-check-result");
  const progress = document.getElementById("cpl-check-progress");
  const logInfo = document.getElementById("cpl-check-log");
  const fileInput = document.getElementById("cpl-check-file");
  const hashForm = document.getElementById("cpl-check-hash-form");
  const hashInput = document.getElementById("cpl-check-hash");
  const origin = root.getAttribute("data-origin");
  const memory = tlog.checkpointMemory(origin);
  const ready = selfTest();
  ready.catch(() => {}); // reported by the first check
  let running = 0;

  function show(verdict, heading, cls, parts) {
    result.replaceChildren();
    result.setAttribute("data-verdict", verdict);
    result.appendChild(el("p", null, "cpl-check-verdict")).appendChild(el("strong", heading, cls));
    for (const p of parts) { result.appendChild(typeof p === "string" ? el("p", p) : p); }
    result.removeAttribute("aria-busy");
  }

  function showLog(current) {
    logInfo.replaceChildren();
    if (!current) { return; }
    const { signed, consistency } = current;
    logInfo.setAttribute("data-consistency", consistency.kind);
    logInfo.setAttribute("data-size", String(signed.checkpoint.size));
    logInfo.appendChild(el("h2", "The log"));
    logInfo.appendChild(el("p", `Checkpoint: size ${signed.checkpoint.size}, root ${tlog.b64encode(signed.checkpoint.root)}, ` +
      "signed by the log key built into this page. " + witnessLine(signed)));
    logInfo.appendChild(el("p", consistencyLine(consistency), consistency.kind === "older-served" ? "cpl-warn" : ""));
  }

  function showFailure(err, image, client) {
    const known = err instanceof tlog.TlogError;
    const failed = known && tlog.FAILED_KINDS.includes(err.kind);
    const parts = [failed ? "Verification failed: " + err.message
      : "Nothing was concluded: " + (known ? err.message : `an unexpected error (${err && err.message})`)];
    if (err && (err.kind === "fork" || err.kind === "rollback")) {
      parts.unshift("FORK OR ROLLBACK: the log has signed two checkpoints that cannot both be true. Keep this page as " +
        "evidence: the log (or someone holding its key) misbehaved. Do not rely on the log until this is explained.");
      if (err.evidence) {
        parts.push(el("p", `Checkpoint ${err.evidence.oldWhere}:`));
        parts.push(el("pre", err.evidence.old, "cpl-checkpoint"));
        parts.push(el("p", `Checkpoint ${err.evidence.newWhere}:`));
        parts.push(el("pre", err.evidence.new, "cpl-checkpoint"));
      }
    }
    if (image) { parts.push(`Image SHA-256: ${image}`); }
    parts.push("Check the file with the Python verifier too (see the verification guide).");
    show("failed", failed ? "FAILED: the site's answer does not verify" : "NOT CHECKED", "cpl-bad", parts);
    if (client && client.current) { showLog(client.current); }
  }

  function showVerdict(res, client) {
    const parts = [];
    const image = el("p", "Image SHA-256: ");
    image.appendChild(el("code", res.image, "cpl-hash"));
    parts.push(image);
    const size = res.checkpoint.size;
    if (res.verdict === "not-found") {
      parts.push(`No association of this image hash is in the log (size ${size}). This absence is proved: the lookup ` +
        `for this hash matches the log's signed lookup commitment (log index ${res.commitmentIndex}), which covers every ` +
        "entry before it. This image is not on the CPL according to this log; do not install it as approved.");
      show("not-found", "NOT FOUND", "cpl-bad", parts);
    } else {
      for (const a of res.associations) {
        const box = el("div", null, "cpl-check-entry");
        box.setAttribute("data-entry-verdict", a.verdict);
        box.setAttribute("data-index", String(a.index));
        if (a.current) {
          box.appendChild(el("p", `Approved and current for its device model: log index ${a.index}, proved included in ` +
            `the checkpoint of size ${size}; no later association of the model is in the log.`));
        } else {
          box.appendChild(el("p", `Replaced: log index ${a.index} was approved, then replaced by log index ${a.replaced_by} ` +
            `(also proved); this hash is no longer current for the model.`));
        }
        box.appendChild(entryFields(a));
        if (a.replacement) {
          box.appendChild(el("p", `The entry that replaced it, log index ${a.replacement.index}:`));
          box.appendChild(entryFields(a.replacement));
        }
        for (const w of a.warnings) { box.appendChild(el("p", "Note: " + w, "cpl-warn")); }
        parts.push(box);
      }
      parts.push(witnessLine(client.current.signed));
      parts.push("Not checked here: whether the signers' certificates were revoked before the approval (the Python " +
        "verifier checks them against the CRLs).");
      const heading = { current: "APPROVED AND CURRENT", replaced: "REPLACED", mixed: "CURRENT FOR SOME DEVICE MODELS, REPLACED FOR OTHERS" }[res.verdict];
      show(res.verdict, heading, res.verdict === "current" ? "cpl-ok" : "cpl-bad", parts);
    }
    showLog(client.current);
  }

  async function check(image, file) {
    const run = ++running;
    result.setAttribute("data-verdict", "");
    result.setAttribute("aria-busy", "true");
    result.replaceChildren(el("p", "Checking…"));
    logInfo.replaceChildren();
    let client = null;
    try {
      await ready;
      if (file) {
        image = await hashFile(file, (done, total) => {
          if (run === running) { progress.textContent = `Computing the SHA-256 of ${file.name}: ${mib(done)} of ${mib(total)}`; }
        });
      }
      if (run !== running) { return; }
      progress.textContent = `SHA-256: ${image}. Checking the log…`;
      client = await tlog.Client.create({
        base: new URL(root.getAttribute("data-log"), document.baseURI).href,
        origin,
        vkey: root.getAttribute("data-vkey"),
        policy: root.getAttribute("data-policy") || null,
        store: memory,
      });
      const res = await client.inclusion(image);
      if (run !== running) { return; }
      progress.textContent = `SHA-256: ${image}`;
      showVerdict(res, client);
    } catch (err) {
      if (run !== running) { return; }
      progress.textContent = image ? `SHA-256: ${image}` : "";
      showFailure(err, image, client);
    }
  }

  fileInput.addEventListener("change", () => {
    const file = fileInput.files && fileInput.files[0];
    if (file) { check(null, file); }
  });
  hashForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const image = tlog.parseImageHash(hashInput.value);
    if (image === null) {
      show("", "Not a SHA-256", "cpl-bad", ["Give 64 hex digits, sha256:HEX, or a line of sha256sum's output."]);
      return;
    }
    check(image, null);
  });
  document.getElementById("cpl-check-forget").addEventListener("click", () => {
    memory.forget();
    progress.textContent = "This browser no longer remembers a checkpoint of this log.";
  });
  root.setAttribute("data-ready", "true");
}

main();
