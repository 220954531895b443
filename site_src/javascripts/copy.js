// Copy buttons (class cpl-copy, the text in data-copy): shown only when scripts run (the cpl-js class).
(function () {
  "use strict";
  document.documentElement.classList.add("cpl-js");
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
