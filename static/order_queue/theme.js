/* Before first paint (loaded in <head>, not deferred): the saved theme, else the system's. */
(function () {
  var saved = localStorage.getItem("oq-theme");
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = saved || (dark ? "dark" : "light");
})();
