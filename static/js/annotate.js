// Keyboard shortcuts and drag ranking for /annotate. The page works without this file: it only adds speed.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var started = Date.now();

  function form() { return document.getElementById("annotate-form"); }
  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
      (el.tagName === "INPUT" && !/^(radio|checkbox|button|submit)$/.test(el.type)));
  }

  // The list order is the ranking: keep the (no-JS) rank selects in step with it.
  function syncRanks(list) {
    Array.prototype.forEach.call(list.children, function (li, i) {
      var select = li.querySelector("select");
      if (select) select.value = String(i + 1);
    });
  }

  // A number key on a focused item places it at that rank (1 = best); focus stays on it.
  function placeItem(li, rank) {
    var list = li.parentNode;
    if (rank < 1 || rank > list.children.length) return false;
    list.removeChild(li);
    list.insertBefore(li, list.children[rank - 1] || null);
    syncRanks(list);
    li.focus();
    return true;
  }

  function focusRanking() {
    var list = document.getElementById("rank-list");
    if (!list || !list.children.length) return false;
    var current = list.querySelector("li:focus") || list.children[0];
    current.focus();
    return true;
  }

  function moveItem(li, step) {
    var list = li.parentNode;
    if (step < 0 && li.previousElementSibling) list.insertBefore(li, li.previousElementSibling);
    else if (step > 0 && li.nextElementSibling) list.insertBefore(li.nextElementSibling, li);
    syncRanks(list);
    li.focus();
  }

  function setupRanking(root) {
    var list = (root || document).querySelector ? (root || document).querySelector("#rank-list") : null;
    if (!list || list.dataset.ready) return;
    list.dataset.ready = "1";
    syncRanks(list);
    if (window.Sortable) {
      window.Sortable.create(list, { animation: 120, onSort: function () { syncRanks(list); } });
    }
    list.addEventListener("keydown", function (e) {
      if (e.target.tagName !== "LI") return;
      if (e.key === "ArrowUp" || e.key === "ArrowDown") {
        e.preventDefault();
        moveItem(e.target, e.key === "ArrowUp" ? -1 : 1);
      } else if (/^[1-8]$/.test(e.key) && !e.altKey && !e.ctrlKey && !e.metaKey) {
        if (placeItem(e.target, +e.key)) { e.preventDefault(); e.stopPropagation(); }
      }
    });
  }

  function pick(key) {
    var input = document.querySelector('#annotate-form input[name="pick"][data-key="' + key + '"]');
    if (!input) return false;
    input.checked = true;
    markPicked();
    return true;
  }

  // Good/bad by keyboard: G or N rates the outlined response, and the outline moves to the next one.
  var cursor = 0;
  var cursorShown = false;
  function cards() { return Array.prototype.slice.call(document.querySelectorAll("#annotate-form .response")); }
  function showCursor() {
    cards().forEach(function (card, i) { card.classList.toggle("rating-cursor", cursorShown && i === cursor); });
  }
  function rate(verdict) {
    var list = cards();
    if (!list.length) return false;
    var input = list[cursor % list.length].querySelector('input[type="radio"][value="' + verdict + '"]');
    if (!input) return false;
    input.checked = true;
    cursor = (cursor + 1) % list.length;
    cursorShown = true;
    showCursor();
    return true;
  }
  function strength(key) {
    var input = document.querySelector('#annotate-form input[name="strength"][data-key="' + key + '"]');
    if (!input) return false;
    input.checked = true;
    return true;
  }

  function markPicked() {
    var checked = document.querySelector('#annotate-form input[name="pick"]:checked');
    document.querySelectorAll(".response").forEach(function (card) {
      card.classList.toggle("picked", !!checked && card.dataset.gid === checked.value);
    });
  }

  function submit(f) {
    var spent = f.querySelector('input[name="time_spent_ms"]');
    if (spent) spent.value = String(Date.now() - started);
    if (typeof f.requestSubmit === "function") f.requestSubmit(); else f.submit();
  }

  document.addEventListener("submit", function (e) {
    if (e.target.id === "annotate-form") {
      var spent = e.target.querySelector('input[name="time_spent_ms"]');
      if (spent) spent.value = String(Date.now() - started);
    }
  }, true);

  document.addEventListener("change", function (e) {
    if (e.target.name === "pick") markPicked();
    if (/^rating_/.test(e.target.name || "")) {  // a click: the outline follows to the next response
      var list = cards();
      var index = list.indexOf(e.target.closest(".response"));
      if (index >= 0) { cursor = (index + 1) % list.length; showCursor(); }
    }
  });

  document.addEventListener("keydown", function (e) {
    var f = form();
    var dialog = document.getElementById("shortcuts");
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && f) { e.preventDefault(); submit(f); return; }
    if (typing(e.target) || e.altKey || e.ctrlKey || e.metaKey) return;
    var key = e.key.toLowerCase();
    if (key === "?") {
      if (dialog) { if (dialog.open) dialog.close(); else dialog.showModal(); }
      e.preventDefault();
      return;
    }
    if (!f) return;
    if (key === "enter") {
      if (e.target.tagName === "BUTTON" || e.target.tagName === "SUMMARY" || e.target.tagName === "A") return;
      e.preventDefault(); submit(f); return;
    }
    if ((key === "1" || key === "a") && pick("a")) e.preventDefault();
    else if ((key === "2" || key === "b") && pick("b")) e.preventDefault();
    else if (key === "t" && pick("t")) e.preventDefault();
    else if (key === "x" && pick("x")) e.preventDefault();
    else if ((key === "l" || key === "c" || key === "m") && strength(key)) e.preventDefault();
    else if ((key === "g" || key === "n") && rate(key === "g" ? "good" : "bad")) e.preventDefault();
    else if (key === "r" && focusRanking()) e.preventDefault();
    else if (key === "s") {
      var skip = document.getElementById("skip-form");
      if (skip) { e.preventDefault(); if (skip.requestSubmit) skip.requestSubmit(); else skip.submit(); }
    }
  });

  function init(root) {
    started = Date.now();
    setupRanking(root);
    markPicked();
    var f = form();
    cursor = 0;
    cursorShown = !!f && f.dataset.kind === "rating";  // elsewhere the outline shows once G or N is used
    showCursor();
  }
  if (window.htmx) window.htmx.onLoad(init);
  else document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) window.htmx.onLoad(init); else init(document);
  });
})();
