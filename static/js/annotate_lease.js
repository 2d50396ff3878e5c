// Keeps the annotate page's lease on its task while the annotator works: on activity (typing, keys, clicks,
// scrolling), at most once a minute (and four times per lease), it posts /annotate/renew and puts the lease line it
// answers in place, which says so when the task can no longer be saved (copy the text then). An idle page renews
// nothing, so an abandoned tab lets its task go when the lease ends. The page works without this file.
(function () {
  "use strict";
  var lastRenew = Date.now();  // a page just rendered holds a fresh lease
  var inFlight = false;

  function lease() { return document.getElementById("lease"); }
  function csrf() {
    var input = document.querySelector('#annotate-form input[name="csrf_token"]');
    return input ? input.value : "";
  }

  function renew(line) {
    inFlight = true;
    lastRenew = Date.now();
    var token = csrf();
    fetch("/annotate/renew", {
      method: "POST",
      credentials: "same-origin",
      headers: { "HX-Request": "true", "X-CSRF-Token": token },
      body: new URLSearchParams({ task_id: line.dataset.task, csrf_token: token })
    }).then(function (response) {
      return response.text();
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("lease");
      var current = lease();
      if (fresh && current && current.dataset.task === fresh.dataset.task) {
        current.replaceWith(document.importNode(fresh, true));
      }
    }).catch(function () {
      lastRenew = 0;  // offline for a moment: the next activity tries again
    }).then(function () { inFlight = false; });
  }

  function active() {
    var line = lease();
    if (!line || inFlight || line.dataset.lost) return;
    var every = Math.min(60000, (+line.dataset.leaseMs || 600000) / 4);
    if (Date.now() - lastRenew >= every) renew(line);
  }

  ["input", "keydown", "pointerdown", "wheel", "scroll"].forEach(function (name) {
    document.addEventListener(name, active, { capture: true, passive: true });
  });
  function init() { lastRenew = Date.now(); }  // a new task (an htmx swap) comes with a fresh lease
  if (window.htmx) window.htmx.onLoad(init);
})();
