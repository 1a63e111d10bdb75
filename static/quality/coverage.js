// The coverage map (quality.charts.coverage_svg): one listener for the whole map, x/y of a click
// -> (symbol, day) -> that day's page.
"use strict";
document.querySelectorAll("svg.coverage-map").forEach(function (svg) {
  var d = svg.dataset, symbols = JSON.parse(d.symbols), first = new Date(d.firstDay + "T00:00:00Z");
  svg.addEventListener("click", function (event) {
    var box = svg.getBoundingClientRect();
    var col = Math.floor((event.clientX - box.left - d.left) / d.cellW);
    var row = Math.floor((event.clientY - box.top - d.top) / d.rowH);
    if (col < 0 || row < 0 || row >= symbols.length || col >= +d.days) return;
    var day = new Date(first.getTime() + col * 86400000).toISOString().slice(0, 10);
    // A function as replacement: "$&" and the like in a symbol are not patterns then.
    window.location = d.dayUrl.replace("SYMBOL", function () { return symbols[row]; })
      .replace("0000-00-00", day);
  });
});
