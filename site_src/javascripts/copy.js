// Copy buttons (class cpl-copy, the text in data-copy): shown only when scripts run (the cpl-js class).
(function () {
  "use strict";
  document.documentElement.classList.add("cpl-js");
  // The pages carry the hashes only; each gets its button here (the search box makes its own).
  function addButtons() {
    document.querySelectorAll("code.cpl-hash").forEach(function (code) {
      var next = code.nextElementSibling;
      if (next && next.classList.contains("cpl-copy")) { return; }
      var button = document.createElement("button");
      button.type = "button";
      button.className = "cpl-copy";
      button.textContent = "Copy";
      button.setAttribute("data-copy", code.textContent);
      button.setAttribute("aria-label", "Copy the image SHA-256");
      code.insertAdjacentElement("afterend", button);
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", addButtons); } else { addButtons(); }
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".cpl-copy") : null;
    if (!button) { return; }
    var text = button.getAttribute("data-copy") || "";
    var done = function (label) {
      button.textContent = label;
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(function () { done("Copied"); }, function () { done("Copy failed"); });
    } else {
      done("Copy failed");
    }
  });
})();
