// Drafts of the annotate page's free text (the critiques and the rewrite): saved in this browser's localStorage as
// they are typed, per annotator and task, and put back when the same task is shown again (a reload, a crash, a
// closed tab). A draft is dropped once the server says its task is done with (saved or skipped), or after a week.
// The page works without this file: it only keeps long text from being lost.
(function () {
  "use strict";
  var PREFIX = "rlhf-draft:";
  var MAX_AGE_MS = 7 * 24 * 3600 * 1000;
  var SAVE_AFTER_MS = 300;  // after the last keystroke
  var storage;
  try {
    storage = window.localStorage;
    storage.getItem(PREFIX);
  } catch (e) {
    return;  // no storage (a private window's policy): nothing to keep drafts in
  }
  var timer = null;

  function form() { return document.getElementById("annotate-form"); }
  function boxes(f) { return Array.prototype.slice.call(f.querySelectorAll("textarea[name]")); }
  function read(key) {
    try { return JSON.parse(storage.getItem(key) || "null"); } catch (e) { return null; }
  }

  function save(f) {
    var key = f && f.dataset.draftKey;
    if (!key) return;
    var texts = {};
    var any = false;
    boxes(f).forEach(function (box) {
      if (box.value.trim()) { texts[box.name] = box.value; any = true; }
    });
    try {
      if (any) storage.setItem(key, JSON.stringify({ saved: Date.now(), texts: texts }));
      else storage.removeItem(key);
    } catch (e) { /* storage full: the text is still in the page */ }
  }

  function saveNow() {
    if (timer) { clearTimeout(timer); timer = null; save(form()); }
  }

  function restore(f) {
    var draft = read(f.dataset.draftKey);
    if (!draft || !draft.texts) return;
    var restored = 0;
    boxes(f).forEach(function (box) {
      var text = draft.texts[box.name];
      if (typeof text === "string" && !box.value.trim()) {  // text the server put back (a refused submit) wins
        box.value = text;
        restored += 1;
        var details = box.closest("details");
        if (details) details.open = true;
      }
    });
    var note = f.querySelector(".draft-note");
    if (restored && note) {
      note.textContent = "Your unsent text from " + new Date(draft.saved).toLocaleTimeString() + " was restored.";
      note.hidden = false;
    }
  }

  function prune() {
    var now = Date.now();
    for (var i = storage.length - 1; i >= 0; i--) {
      var key = storage.key(i);
      if (key && key.indexOf(PREFIX) === 0) {
        var draft = read(key);
        if (!draft || !(now - draft.saved < MAX_AGE_MS)) storage.removeItem(key);
      }
    }
  }

  document.addEventListener("input", function (e) {
    var f = form();
    if (!f || e.target.tagName !== "TEXTAREA" || !f.contains(e.target)) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(function () { timer = null; save(f); }, SAVE_AFTER_MS);
  });
  // Before the form leaves (submit, reload, closing the tab): what was typed last is in the draft too.
  document.addEventListener("submit", function (e) { if (e.target.id === "annotate-form") saveNow(); }, true);
  window.addEventListener("pagehide", saveNow);

  function init(root) {
    var scope = root && root.querySelectorAll ? root : document;
    Array.prototype.forEach.call(scope.querySelectorAll("[data-finished-draft]"), function (el) {
      storage.removeItem(el.dataset.finishedDraft);
    });
    var f = form();
    if (f && (scope === document || scope.contains(f))) restore(f);
  }
  prune();
  if (window.htmx) window.htmx.onLoad(init);
  else document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) window.htmx.onLoad(init); else init(document);
  });
})();
