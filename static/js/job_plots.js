// Metric plots for the job page: one line chart per (stage, metric), fed from /admin/jobs/{id}/metrics.
// Fetches only points after the last one seen, every 2 s, and stops once the job is finished.
(function () {
  "use strict";
  const box = document.getElementById("job-plots");
  if (!box || typeof Chart === "undefined") return;
  const url = box.dataset.metricsUrl;
  const charts = new Map();
  let after = 0;

  function chartFor(key) {
    let chart = charts.get(key);
    if (chart) return chart;
    const empty = box.querySelector(".job-plots-empty");
    if (empty) empty.remove();
    const wrap = document.createElement("div");
    wrap.className = "job-plot";
    const canvas = document.createElement("canvas");
    canvas.setAttribute("aria-label", key);
    wrap.appendChild(canvas);
    box.appendChild(wrap);
    chart = new Chart(canvas, {
      type: "line",
      data: { datasets: [{ label: key, data: [], pointRadius: 0, borderWidth: 1.5, borderColor: "#2457c5" }] },
      options: {
        animation: false, parsing: false, maintainAspectRatio: false,
        scales: { x: { type: "linear", title: { display: true, text: "step" } } },
        plugins: { legend: { display: false }, title: { display: true, text: key } },
      },
    });
    charts.set(key, chart);
    return chart;
  }

  function add(points) {
    const touched = new Set();
    for (const point of points) {
      after = Math.max(after, point.id);
      for (const [name, value] of Object.entries(point.values)) {
        if (typeof value !== "number" || !isFinite(value)) continue;
        const key = point.stage ? point.stage + " · " + name : name;
        chartFor(key).data.datasets[0].data.push({ x: point.step, y: value });
        touched.add(key);
      }
    }
    touched.forEach((key) => charts.get(key).update("none"));
  }

  async function poll() {
    let next = 2000;
    try {
      const response = await fetch(url + "?after=" + after, { headers: { Accept: "application/json" } });
      if (!response.ok) return; // logged out or gone: stop
      const data = await response.json();
      add(data.metrics);
      if (data.more) next = 0;
      else if (data.finished) return;
    } catch (err) {
      next = 5000; // network hiccup: try again a bit later
    }
    setTimeout(poll, next);
  }

  poll();
})();
