// Loads the vendored copy of a front-end library when its CDN copy did not run (no network, the CDN blocked, or
// the copy refused for not matching its integrity hash). It sits right after the CDN <script>, and both block the
// parser, so document.write puts the vendored copy in the same place: it runs before any script that uses it.
(function () {
  "use strict";
  var me = document.currentScript;
  if (!me || window[me.dataset.global]) return;
  document.write('<script src="' + me.dataset.src + '"><\/script>');
})();
