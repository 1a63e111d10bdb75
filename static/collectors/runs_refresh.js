// The runs list while runs are active (loaded only then): reload every 5 seconds, but never while
// the operator is selecting runs or an action.
"use strict";
setInterval(function () {
  var busy = document.querySelector("input.action-select:checked, #action-toggle:checked")
    || (document.querySelector("select[name=action]") || {}).value;
  if (!busy) { window.location.reload(); }
}, 5000);
