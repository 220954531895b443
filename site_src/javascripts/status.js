// Status computed when the page is viewed, not when it was built: a failed daily publish must not leave a
// page that looks healthy. Reads the dates the page carries (data-cpl-* attributes, from status.json at
// build time) and the log's checkpoint (its witnesses' cosignature times), and says in words, not only in
// colour, what is expired or late. Only text nodes are written. Without scripts the page keeps its
// build-time status and says as of when.
(function () {
  "use strict";
  var asOf = document.querySelector("[data-cpl-as-of]");
  if (!asOf) { return; }
  var LATE_FACTOR = 1.25;  // as publisher/site/pages.py
  var now = Date.now();

  function parse(iso) { var t = Date.parse(iso); return isNaN(t) ? null : t; }
  function span(ms) {
    var m = Math.round(Math.abs(ms) / 60000), d = Math.floor(m / 1440), h = Math.floor((m % 1440) / 60);
    if (d > 0) { return d + " d " + h + " h"; }
    if (h > 0) { return h + " h " + (m % 60) + " min"; }
    return (m % 60) + " min";
  }
  function mark(el, text, ok) {
    el.textContent = text;
    el.classList.remove("cpl-ok", "cpl-bad");
    el.classList.add(ok ? "cpl-ok" : "cpl-bad");
  }

  document.querySelectorAll("[data-cpl-next-update]").forEach(function (el) {
    var next = parse(el.getAttribute("data-cpl-next-update"));
    if (next === null) { return; }
    if (now >= next) { mark(el, "EXPIRED " + span(now - next) + " ago: do not rely on it", false); }
    else { mark(el, "fresh", true); }
  });
  document.querySelectorAll("[data-cpl-until]").forEach(function (el) {
    var next = parse(el.getAttribute("data-cpl-until"));
    if (next === null) { return; }
    el.textContent = now < next ? "(in " + span(next - now) + ")" : "(" + span(now - next) + " ago)";
  });
  document.querySelectorAll("[data-cpl-ago]").forEach(function (el) {
    var at = parse(el.getAttribute("data-cpl-ago"));
    if (at !== null) { el.textContent = "(" + span(now - at) + " ago)"; }
  });
  document.querySelectorAll("[data-cpl-published]").forEach(function (el) {
    var at = parse(el.getAttribute("data-cpl-published"));
    var hours = parseFloat(el.getAttribute("data-cpl-interval-hours"));
    if (at === null || !(hours > 0)) { return; }
    if (now - at > hours * LATE_FACTOR * 3600000) {
      mark(el, "LATE: no publish for " + span(now - at) + " (scheduled every " + hours + " h)", false);
    } else {
      mark(el, "on schedule (every " + hours + " h)", true);
    }
  });

  // The checkpoint's age as its witnesses dated it: type 0x04 cosignature lines carry a timestamp.
  var age = document.querySelector("[data-cpl-checkpoint-age]");
  if (age) {
    fetch(new URL("log/checkpoint", document.baseURI), { credentials: "omit", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (note) {
        var times = note.split("\n").filter(function (l) { return l.indexOf("\u2014 ") === 0; }).map(function (l) {
          var raw = atob(l.split(" ").pop());
          if (raw.length !== 76) { return null; }
          var t = 0;
          for (var i = 4; i < 12; i++) { t = t * 256 + raw.charCodeAt(i); }
          return t * 1000;
        }).filter(function (t) { return t !== null; });
        if (times.length) {
          var newest = Math.max.apply(null, times);
          age.textContent = "; cosigned by " + times.length + " witness" + (times.length === 1 ? "" : "es") +
            ", most recently " + span(now - newest) + " ago";
        }
      })
      .catch(function () { age.textContent = ""; });
  }
  asOf.textContent = "Status computed by your browser at " + new Date(now).toISOString().replace(".000", "") +
    " from the dates the site publishes (the page was built at the last publish, " +
    asOf.getAttribute("data-cpl-as-of") + ").";
})();
