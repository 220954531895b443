// Firmware search: one small shard per query, fetched from this site only.
// Results are built with DOM text nodes (never innerHTML), so submitted names stay inert.
(function () {
  "use strict";
  var input = document.getElementById("cpl-search");
  if (!input) { return; }
  var out = document.getElementById("cpl-search-results");
  var root = new URL("../", document.baseURI.replace(/firmware\/.*$/, "firmware/"));
  var columns = ["Log index", "Manufacturer", "Name", "Model", "Hardware", "Firmware", "Type", "SMETS",
                 "Image SHA-256", "Approved", "Status"];

  function sha256hex(text) {
    return crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)).then(function (buf) {
      return Array.from(new Uint8Array(buf)).map(function (b) { return b.toString(16).padStart(2, "0"); }).join("");
    });
  }
  function fetchShard(path) {
    return fetch(new URL(path, root), { credentials: "omit" }).then(function (r) {
      if (r.status === 404) { return []; }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    });
  }
  function show(rows, query) {
    out.textContent = "";
    var p = document.createElement("p");
    p.textContent = rows.length + " association" + (rows.length === 1 ? "" : "s") + " for \u201c" + query + "\u201d";
    out.appendChild(p);
    if (!rows.length) { return; }
    var table = document.createElement("table");
    var head = table.createTHead().insertRow();
    columns.forEach(function (c) {
      var th = document.createElement("th"); th.textContent = c; head.appendChild(th);
    });
    var body = table.createTBody();
    rows.forEach(function (r) {
      var tr = body.insertRow();
      for (var i = 0; i < 10; i++) { tr.insertCell().textContent = String(r[i]); }
      tr.insertCell().textContent = r[10] === null ? "current" : "replaced by #" + r[10];
    });
    out.appendChild(table);
  }
  var timer = null;
  function search() {
    var q = input.value.trim();
    if (q.length < 2) { out.textContent = ""; return; }
    var hex = q.toLowerCase();
    var job;
    if (/^[0-9a-f]{4,64}$/.test(hex)) {
      job = Promise.all([
        fetchShard("search/hash/" + hex.slice(0, 2) + ".json").then(function (rows) {
          return rows.filter(function (r) { return r[8].indexOf(hex) === 0; });
        }),
        sha256hex(hex).then(function (h) { return fetchShard("search/model/" + h.slice(0, 2) + ".json"); })
          .then(function (rows) { return rows.filter(function (r) { return r[3].toLowerCase() === hex; }); })
      ]).then(function (parts) { return parts[0].concat(parts[1]); });
    } else {
      job = sha256hex(q.toLowerCase()).then(function (h) {
        return fetchShard("search/model/" + h.slice(0, 2) + ".json");
      }).then(function (rows) {
        return rows.filter(function (r) { return r[3].toLowerCase() === q.toLowerCase(); });
      });
    }
    job.then(function (rows) { show(rows, q); }).catch(function (e) { out.textContent = "Search failed: " + e.message; });
  }
  input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(search, 150); });
})();
