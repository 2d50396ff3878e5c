// /admin/stats: one line per annotator over the days of the window; the table on the page holds the same numbers.
// A file, not an inline script: the Content-Security-Policy allows scripts from this server and the CDN only.
(function () {
  const data = document.getElementById("throughput-data");
  const canvas = document.getElementById("throughput-chart");
  if (!data || !canvas || typeof Chart === "undefined") return;
  const rows = JSON.parse(data.textContent);
  const days = [...new Set(rows.map(r => r.day))].sort();
  const names = [...new Set(rows.map(r => r.annotator))].sort();
  const datasets = names.map(name => ({
    label: name,
    data: days.map(d => (rows.find(r => r.day === d && r.annotator === name) || {count: 0}).count),
  }));
  new Chart(canvas, {type: "line", data: {labels: days, datasets: datasets},
    options: {animation: false, scales: {y: {beginAtZero: true}}}});
})();
