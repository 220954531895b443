// The firmware search: one box for a manufacturer's name or ID, a device model, an image hash (4+ hex digits),
// a Panel reference or a submission ID. It reads the site's static search files only (a few small shards per
// query, found by a SHA-256 prefix of the term), and builds results with DOM text nodes, never innerHTML, so
// submitted names stay inert. Rows are the lists publisher/site/state.py writes (positions below).
(function () {
  "use strict";
  var input = document.getElementById("cpl-search");
  if (!input) { return; }
  var out = document.getElementById("cpl-search-results");
  var root = new URL("../", document.baseURI.replace(/firmware\/.*$/, "firmware/"));
  var I = { index: 0, mid: 1, org: 2, model: 3, hw: 4, fw: 5, type: 6, smets: 7, hash: 8, approved: 9,
            replacedBy: 10, endorser: 11, replaces: 12, investigation: 13, panel: 14, submission: 15, signers: 16 };
  var HEADERS = ["Status", "Endorsed by", "Device model", "Approved (UTC)", "Log index"];

  function sha256hex(text) {
    return crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)).then(function (buf) {
      return Array.from(new Uint8Array(buf)).map(function (b) { return b.toString(16).padStart(2, "0"); }).join("");
    });
  }
  function fetchJson(path) {
    return fetch(new URL(path, root), { credentials: "omit" }).then(function (r) {
      if (r.status === 404) { return []; }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    });
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }
  function cell(tr, label, content) {  // the card's label comes from the stylesheet, by column
    var td = tr.insertCell();
    content.forEach(function (c) { td.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return td;
  }
  // The same layout as the manufacturer pages (publisher/site/pages.py firmware_table).
  function association(table, r) {
    var body = el("tbody", undefined, "cpl-assoc");
    body.setAttribute("data-signers", (r[I.signers] || []).join(" "));
    body.setAttribute("data-approved", String(r[I.approved]));
    var tr = body.insertRow();
    var status = r[I.replacedBy] === null ? [el("span", "current", "cpl-ok")]
      : [el("span", "replaced", "cpl-bad"), " by #" + r[I.replacedBy]];
    if (r[I.replaces] !== null) { status.push(el("br"), "replaces #" + r[I.replaces] + " (" + r[I.investigation] + ")"); }
    cell(tr, HEADERS[0], status);
    cell(tr, HEADERS[1], [String(r[I.endorser])]);
    cell(tr, HEADERS[2], [el("strong", String(r[I.model])), " · hw " + r[I.hw] + " · fw " + r[I.fw] + " · " +
      r[I.type] + " · " + r[I.smets] + " · " + r[I.org] + " (" + r[I.mid] + ")"]);
    cell(tr, HEADERS[3], [String(r[I.approved]).replace("T", " ").replace(/Z$/, "")]);
    var entry = el("a", String(r[I.index]));
    entry.href = new URL("entry/?i=" + encodeURIComponent(String(r[I.index])), root).href;
    cell(tr, HEADERS[4], [entry]);
    var hashRow = body.insertRow();
    hashRow.className = "cpl-hash-row";
    var copy = el("button", "Copy", "cpl-copy");
    copy.type = "button";
    copy.setAttribute("data-copy", String(r[I.hash]));
    copy.setAttribute("aria-label", "Copy the image SHA-256");
    var td = cell(hashRow, "Image SHA-256", [el("code", String(r[I.hash]), "cpl-hash"), copy]);
    td.colSpan = HEADERS.length;
    table.appendChild(body);
  }
  function show(makers, rows, query) {
    out.textContent = "";
    var summary = [];
    if (makers.length) { summary.push(makers.length + " manufacturer" + (makers.length === 1 ? "" : "s")); }
    summary.push(rows.length + " association" + (rows.length === 1 ? "" : "s"));
    out.appendChild(el("p", summary.join(", ") + " for \u201c" + query + "\u201d"));
    if (makers.length) {
      var list = el("ul", undefined, "cpl-makers");
      makers.forEach(function (m) {
        var a = el("a", m[1] + " (" + m[0] + "): " + m[3] + " association" + (m[3] === 1 ? "" : "s"));
        a.href = new URL("firmware/" + encodeURIComponent(m[2]) + "/", root).href;
        var li = el("li"); li.appendChild(a); list.appendChild(li);
      });
      out.appendChild(list);
    }
    if (!rows.length) { return; }
    var wrap = el("div", undefined, "cpl-firmware");
    var table = el("table", undefined, "cpl-assoc-table");
    var head = table.createTHead().insertRow();
    HEADERS.forEach(function (h) { var th = el("th", h); th.scope = "col"; head.appendChild(th); });
    rows.forEach(function (r) { association(table, r); });
    wrap.appendChild(table);
    out.appendChild(wrap);
    if (window.cplSigners) { window.cplSigners.mark(wrap); }
  }
  var makersList = null;
  function makers() {
    if (makersList === null) { makersList = fetchJson("search/makers.json"); }
    return makersList;
  }
  var latest = 0;
  function search() {
    var q = input.value.trim(), lower = q.toLowerCase(), ticket = ++latest;
    if (q.length < 2) { out.textContent = ""; return; }
    var jobs = [
      sha256hex(lower).then(function (h) {
        return Promise.all([fetchJson("search/model/" + h.slice(0, 2) + ".json"),
                            fetchJson("search/ref/" + h.slice(0, 2) + ".json")]);
      }).then(function (parts) {
        // A reference shard holds [index, Panel ref, submission ID, hash]: the rows are in the hash shards.
        var refs = parts[1].filter(function (r) {
          return String(r[1]).toLowerCase() === lower || String(r[2]).toLowerCase() === lower;
        });
        var prefixes = Array.from(new Set(refs.map(function (r) { return String(r[3]).slice(0, 2); })));
        var wanted = {};
        refs.forEach(function (r) { wanted[r[0]] = true; });
        return Promise.all(prefixes.map(function (p) { return fetchJson("search/hash/" + p + ".json"); }))
          .then(function (shards) {
            var byRef = [].concat.apply([], shards).filter(function (r) { return wanted[r[I.index]]; });
            return parts[0].filter(function (r) { return String(r[I.model]).toLowerCase() === lower; }).concat(byRef);
          });
      })
    ];
    if (/^[0-9a-f]{4,64}$/.test(lower)) {
      jobs.push(fetchJson("search/hash/" + lower.slice(0, 2) + ".json").then(function (rows) {
        return rows.filter(function (r) { return String(r[I.hash]).indexOf(lower) === 0; });
      }));
    }
    var found = makers().then(function (all) {
      return all.filter(function (m) {
        return String(m[0]).toLowerCase() === lower || String(m[1]).toLowerCase().indexOf(lower) !== -1;
      });
    });
    Promise.all([found, Promise.all(jobs)]).then(function (res) {
      if (ticket !== latest) { return; }  // a newer query is on its way
      var seen = {}, rows = [];
      res[1].forEach(function (part) {
        part.forEach(function (r) { if (!seen[r[I.index]]) { seen[r[I.index]] = true; rows.push(r); } });
      });
      rows.sort(function (a, b) { return b[I.index] - a[I.index]; });
      show(res[0], rows, q);
    }).catch(function (e) { if (ticket === latest) { out.textContent = "Search failed: " + e.message; } });
  }
  var timer = null;
  input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(search, 150); });
})();
