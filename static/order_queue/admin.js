/* Order-queue admin page, the parts both pages use.  Every value from the server is
   written with textContent, never as HTML, so a symbol or broker message containing markup
   shows as text.  Plain scripts without a build step (OpenAlgo's Content-Security-Policy
   allows only same-origin scripts, no inline ones): this one, then admin-index.js or
   admin-detail.js, which read what this one shares on window.orderQueue. */
(function () {
  "use strict";

  var csrfToken = document.querySelector('meta[name="csrf-token"]').content;

  function api(path, options) {
    options = options || {};
    var headers = { "Accept": "application/json" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["X-CSRFToken"] = csrfToken;
    }
    return fetch("/order-queue/api/" + path, {
      method: options.method || "GET",
      headers: headers,
      credentials: "same-origin",
      body: options.body === undefined ? undefined : JSON.stringify(options.body)
    }).then(function (response) {
      if (response.status === 401) { window.location.href = "/auth/login?next=" + encodeURIComponent(location.pathname); }
      return response.json().then(function (data) {
        if (!response.ok) { throw new Error(data.message || ("HTTP " + response.status)); }
        return data;
      });
    });
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) { td.className = className; }
    row.appendChild(td);
    return td;
  }

  function button(label, onClick, ghost) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "btn btn-small" + (ghost ? " btn-ghost" : "");
    b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) { return "–"; }
    if (seconds < 90) { return Math.round(seconds) + "s"; }
    if (seconds < 5400) { return Math.round(seconds / 60) + "m"; }
    if (seconds < 172800) { return Math.round(seconds / 3600) + "h"; }
    return Math.round(seconds / 86400) + "d";
  }

  function alertBox(message, danger) {
    var box = document.createElement("div");
    box.className = "alert" + (danger ? " alert-danger" : "");
    box.setAttribute("role", "alert");
    box.textContent = message;
    document.getElementById("alerts").appendChild(box);
    setTimeout(function () { box.remove(); }, danger ? 15000 : 5000);
  }

  /* Run an action; a replay or a "not placed" settle that needs confirmation asks, then
     runs again confirmed. */
  function act(action, ids, extra) {
    /* ids null: the action applies to every dead order matching extra.filter. */
    var body = Object.assign(ids ? { ids: ids } : {}, extra || {});
    if (action === "dismiss") {
      var what = ids ? ids.length + " order(s)" : "every dead order matching the filter";
      var note = window.prompt("Dismiss " + what + ". Note (optional):", "");
      if (note === null) { return Promise.resolve(); }
      body.note = note || null;
    }
    return api("orders/" + action, { method: "POST", body: body }).then(function (data) {
      var waiting = data.results.filter(function (r) { return r.needs_confirmation; });
      data.results.forEach(function (r) {
        if (!r.needs_confirmation) { alertBox("#" + r.order_id + ": " + r.message, !r.ok); }
      });
      if (waiting.length) {
        var message = waiting.map(function (r) { return "#" + r.order_id + ": " + r.message; }).join("\n");
        var settling = action === "settle";
        if (window.confirm((settling ? "Send again anyway?" : "Replay anyway?") + "\n\n" + message)) {
          var again = settling ? { placed: false, confirm: true } : { confirm: true };
          return act(action, waiting.map(function (r) { return r.order_id; }), again);
        }
      }
    }).catch(function (error) { alertBox(action + " failed: " + error.message, true); });
  }

  /* Live updates.  Events sent before the socket (re)connects are never replayed, so every
     connect re-reads the page's data; otherwise an order that changed between the first load
     and the connect would stay stale on screen. */
  function connectLive(onOrderEvent, resync) {
    var badge = document.getElementById("live");
    if (typeof io === "undefined") { return; }
    var socket = io("/order-queue", { transports: ["websocket", "polling"] });
    socket.on("connect", function () {
      badge.textContent = "live";
      badge.className = "pill pill-live";
      resync();
    });
    socket.on("disconnect", function () { badge.textContent = "offline"; badge.className = "pill pill-muted"; });
    socket.on("order_queue:order", onOrderEvent);
    socket.on("order_queue:dead", function (event) {
      alertBox("Order #" + event.id + " dead-lettered (" + (event.reason || "?") + "): " +
               (event.symbol || "") + " " + (event.error || ""), true);
    });
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () { clearTimeout(timer); timer = setTimeout(fn, ms); };
  }

  function clock(iso) {
    return iso ? new Date(iso.replace(" ", "T") + (/Z|[+-]\d\d:?\d\d$/.test(iso) ? "" : "Z")).toLocaleTimeString() : "";
  }

  /* A cell holding a link to the order's own page. */
  function orderLink(row, order, text) {
    var link = document.createElement("a");
    link.href = "/order-queue/orders/" + order.id;
    link.textContent = text || "#" + order.id;
    row.appendChild(document.createElement("td")).appendChild(link);
    return link;
  }

  /* A cell with a replay-like and a dismiss-like button for one order. */
  function replayAndDismiss(row, order, refresh, labels) {
    var actions = cell(row, "");
    actions.appendChild(button(labels[0], function () { act("replay", [order.id]).then(refresh); }));
    actions.appendChild(document.createTextNode(" "));
    actions.appendChild(button(labels[1], function () { act("dismiss", [order.id]).then(refresh); }, true));
  }

  document.getElementById("theme-toggle").addEventListener("click", function () {
    var next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("oq-theme", next);
  });

  window.orderQueue = {
    api: api, cell: cell, button: button, age: age, alertBox: alertBox, act: act,
    connectLive: connectLive, debounce: debounce, clock: clock, orderLink: orderLink,
    replayAndDismiss: replayAndDismiss
  };
})();
