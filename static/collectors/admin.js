// The project's admin pages: behaviour that used to be inline (Content-Security-Policy:
// script-src 'self'). Loaded on every admin page (admin/base_site.html).
"use strict";
// <form data-confirm="Really?">: ask before submitting (cancel a run or a backfill).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
