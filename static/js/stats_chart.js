// The stats page's throughput chart: one line per annotator over the days of the window (the table below the chart
// holds the same numbers). Reads the JSON block the page embeds; an external file, so no inline script is needed.
(function () {
  "use strict";
  var data = document.getElementById("throughput-data");
  var canvas = document.getElementById("throughput-chart");
  if (!data || !canvas || !window.Chart) return;
  var rows = JSON.parse(data.textContent);
  var days = Array.from(new Set(rows.map(function (r) { return r.day; }))).sort();
  var names = Array.from(new Set(rows.map(function (r) { return r.annotator; }))).sort();
  var datasets = names.map(function (name) {
    return {
      label: name,
      data: days.map(function (d) {
        var row = rows.find(function (r) { return r.day === d && r.annotator === name; });
        return row ? row.count : 0;
      }),
    };
  });
  new window.Chart(canvas, {
    type: "line",
    data: { labels: days, datasets: datasets },
    options: { animation: false, scales: { y: { beginAtZero: true } } },
  });
})();
