// Starts ReDoc (drf-spectacular's inline init script, as a file: Content-Security-Policy
// script-src 'self'). ReDoc's styled-components insert <style> elements: they carry this
// response's CSP nonce (data-nonce; a nonce attribute would be hidden by the browser).
"use strict";
(function () {
  var container = document.getElementById("redoc-container");
  Redoc.init(container.dataset.specUrl, {nonce: container.dataset.nonce}, container);
})();
