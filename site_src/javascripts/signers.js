// Marks associations (tbody.cpl-assoc, data-signers: the signers' certificate SHA-256s, data-approved) whose
// manufacturer's or endorser's certificate the site lists as revoked (/revocations.json, from its registers):
// "signer revoked since", or, when revoked (or declared invalid) before the approval, "do not rely on it", in
// words and colour. The signed CRLs remain the authority: the Python verifier checks them.
(function () {
  "use strict";
  var script = document.currentScript;
  var root = new URL("../", script ? script.src : document.baseURI);  // this file is at <site>/javascripts/
  var listed = null;
  function revocations() {
    if (listed === null) {
      listed = fetch(new URL("revocations.json", root), { credentials: "omit" })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (rows) {
          var byCert = {};
          // The rows name signers by the first 16 hex digits of their certificate's SHA-256 (site/state.py).
          (Array.isArray(rows) ? rows : []).forEach(function (r) {
            if (r.certificate_sha256) { byCert[String(r.certificate_sha256).slice(0, 16)] = r; }
          });
          return byCert;
        }, function () { return {}; });
    }
    return listed;
  }
  function mark(scope) {
    var bodies = (scope || document).querySelectorAll("tbody.cpl-assoc[data-signers]");
    if (!bodies.length) { return Promise.resolve(); }
    return revocations().then(function (byCert) {
      bodies.forEach(function (body) {
        if (body.querySelector(".cpl-revoked")) { return; }
        var approved = Date.parse(body.getAttribute("data-approved"));
        body.getAttribute("data-signers").split(" ").forEach(function (cert) {
          var r = byCert[cert];
          if (!r) { return; }
          var since = Date.parse(r.invalidity_date || r.revoked_at);
          var p = document.createElement("span");
          p.className = "cpl-revoked cpl-bad";
          p.textContent = since < approved
            ? "a signer's certificate was revoked or invalid before this approval (" + (r.invalidity_date || r.revoked_at) +
              ", " + r.reason + "): do not rely on it"
            : "signer revoked since: " + r.revoked_at.slice(0, 10) + " (" + r.reason + ")";
          var cell = body.querySelector("td");
          cell.appendChild(document.createElement("br"));
          cell.appendChild(p);
        });
      });
    });
  }
  window.cplSigners = { mark: mark };
  mark(document);
})();
