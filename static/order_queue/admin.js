/* Order-queue admin page.  Every value from the server is written with textContent,
   never as HTML, so a symbol or broker message containing markup shows as text.
   One file of just over 400 lines on purpose: the page has no build step and OpenAlgo's
   Content-Security-Policy allows only same-origin scripts, so it ships as one plain script. */
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

  /* ---------------------------------------------------------------- index page */

  function renderStats(stats) {
    ["pending", "sending", "in_doubt", "dead"].forEach(function (state) {
      var lanes = stats.depth[state];
      var count = document.getElementById("count-" + state);
      if (count) { count.textContent = lanes.smart + lanes.regular; }
      if (state === "dead") {  /* red only when something waits for a human */
        document.getElementById("card-dead").classList.toggle("card-danger", lanes.smart + lanes.regular > 0);
      }
      document.getElementById("lanes-" + state).textContent =
        "smart " + lanes.smart + " · regular " + lanes.regular;
    });
    document.getElementById("sent-today").textContent = stats.sent_today;
    document.getElementById("lanes-sent").textContent =
      "smart " + stats.sent_today_by_lane.smart + " · regular " + stats.sent_today_by_lane.regular;
    document.getElementById("oldest-pending").textContent = age(stats.oldest_pending_age_seconds);
    renderSquareoffs(stats.squareoffs_today || []);
    var d = stats.dispatcher;
    document.getElementById("dispatcher-status").textContent =
      (d.alive ? "Running" : "NOT RUNNING") + (d.ids.length ? " · " + d.ids.join(", ") : "") +
      (d.last_heartbeat ? " · last heartbeat " + d.last_heartbeat : "") +
      " · limits per account: regular " + d.regular_rate + ", smart " + d.smart_rate +
      " per " + d.rate_window_seconds + "s";
    document.getElementById("storage-warning").textContent = stats.storage_warning || "";
    document.getElementById("clock-warning").textContent = (stats.clock_warnings || []).join("; ");
    var resent = stats.resent_alerts_refused_today;
    document.getElementById("alerts-resent").textContent = resent ?
      resent + " resent alerts refused today (an alert key already used: nothing queued)" : "";
    var refused = stats.webhooks_refused;
    document.getElementById("webhooks-refused").textContent = refused && refused.count ?
      refused.count + " webhooks refused by the host's rate limit (answered 429: the sender " +
      "must send them again), last at " + refused.last_at : "";
  }

  /* Today's squareoffs; one caught up at start or missed stands out. */
  function renderSquareoffs(rows) {
    var list = document.getElementById("squareoffs");
    var words = { on_time: "ran on time", caught_up: "caught up at start (the app was down at its minute)",
                  missed: "MISSED: the app started too late; check positions by hand" };
    list.replaceChildren.apply(list, rows.map(function (row) {
      var item = document.createElement("li");
      item.className = "squareoff squareoff-" + row.outcome;
      item.textContent = row.squareoff_time + " IST · " + row.source + " · " + row.strategy +
        " · " + (words[row.outcome] || row.outcome);
      return item;
    }));
    document.getElementById("squareoffs-empty").hidden = rows.length > 0;
  }

  function selectedIds() {
    return Array.prototype.map.call(
      document.querySelectorAll("#dead-table tbody input:checked"),
      function (box) { return Number(box.value); });
  }

  function updateBulkButtons() {
    var none = selectedIds().length === 0;
    document.getElementById("bulk-replay").disabled = none;
    document.getElementById("bulk-dismiss").disabled = none;
  }

  /* Repainted on every event and timer tick: keep what the operator has ticked. */
  function renderDead(data, refresh) {
    var body = document.querySelector("#dead-table tbody");
    var ticked = selectedIds();
    body.replaceChildren();
    data.orders.forEach(function (order) {
      var row = document.createElement("tr");
      var check = document.createElement("input");
      check.type = "checkbox";
      check.value = order.id;
      check.checked = ticked.indexOf(order.id) !== -1;
      check.setAttribute("aria-label", "Select order " + order.id);
      check.addEventListener("change", updateBulkButtons);
      row.appendChild(document.createElement("td")).appendChild(check);
      var link = document.createElement("a");
      link.href = "/order-queue/orders/" + order.id;
      link.textContent = "#" + order.id;
      row.appendChild(document.createElement("td")).appendChild(link);
      cell(row, order.strategy);
      cell(row, order.symbol);
      cell(row, order.payload.action);
      cell(row, order.dead_reason);
      cell(row, order.last_error, "error-cell");
      cell(row, order.attempts);
      cell(row, age(order.age_seconds));
      var actions = cell(row, "");
      actions.appendChild(button("Replay", function () { act("replay", [order.id]).then(refresh); }));
      actions.appendChild(document.createTextNode(" "));
      actions.appendChild(button("Dismiss", function () { act("dismiss", [order.id]).then(refresh); }, true));
      body.appendChild(row);
    });
    document.getElementById("dead-empty").hidden = data.orders.length > 0;
    document.getElementById("select-all").checked =
      data.orders.length > 0 && selectedIds().length === data.orders.length;
    updateBulkButtons();
  }

  /* Sent, then rejected or cancelled by the broker: a human sends it again (a new order
     asking the same, with the replay's confirmation) or sets it aside. */
  function renderRejected(data, refresh) {
    var body = document.querySelector("#rejected-table tbody");
    body.replaceChildren();
    data.orders.forEach(function (order) {
      var row = document.createElement("tr");
      var link = document.createElement("a");
      link.href = "/order-queue/orders/" + order.id;
      link.textContent = "#" + order.id;
      row.appendChild(document.createElement("td")).appendChild(link);
      cell(row, order.strategy);
      cell(row, order.symbol);
      cell(row, order.payload.action);
      cell(row, order.payload.quantity);
      cell(row, order.broker_status, "error-cell");
      cell(row, order.broker_message, "error-cell");
      cell(row, order.broker_orderid);
      var actions = cell(row, "");
      actions.appendChild(button("Send again", function () { act("replay", [order.id]).then(refresh); }));
      actions.appendChild(document.createTextNode(" "));
      actions.appendChild(button("Set aside", function () { act("dismiss", [order.id]).then(refresh); }, true));
      body.appendChild(row);
    });
    document.getElementById("rejected-empty").hidden = data.orders.length > 0;
  }

  function renderOpen(data, refresh) {
    var body = document.querySelector("#open-table tbody");
    body.replaceChildren();
    data.orders.forEach(function (order) {
      var row = document.createElement("tr");
      var link = document.createElement("a");
      link.href = "/order-queue/orders/" + order.id;
      link.textContent = "#" + order.id;
      row.appendChild(document.createElement("td")).appendChild(link);
      cell(row, order.state);
      cell(row, order.lane);
      cell(row, order.strategy);
      cell(row, order.symbol);
      cell(row, order.payload.action);
      cell(row, order.attempts);
      cell(row, age(order.age_seconds));
      cell(row, order.last_error, "error-cell");
      var actions = cell(row, "");
      if (order.state === "pending") {
        actions.appendChild(button("Cancel", function () {
          if (window.confirm("Cancel order #" + order.id + "? It will not be sent.")) {
            act("cancel", [order.id]).then(refresh);
          }
        }, true));
      }
      body.appendChild(row);
    });
    document.getElementById("open-empty").hidden = data.orders.length > 0;
  }

  function clock(iso) {
    return iso ? new Date(iso.replace(" ", "T") + (/Z|[+-]\d\d:?\d\d$/.test(iso) ? "" : "Z")).toLocaleTimeString() : "";
  }

  /* Instruments held back, each with what it waits for; an order in doubt is settled
     right here ("placed, id X" / "not placed"). */
  function renderHeld(data, refresh) {
    var list = document.getElementById("held");
    list.replaceChildren();
    data.held.forEach(function (order) {
      var item = document.createElement("li");
      item.className = "held-item";
      var link = document.createElement("a");
      link.href = "/order-queue/orders/" + order.id;
      link.textContent = "#" + order.id + " " + order.symbol + " " + order.exchange;
      item.appendChild(link);
      var pill = document.createElement("span");
      pill.className = "pill state-" + order.state;
      pill.textContent = order.state === "dead" ? "dead, in doubt" : order.state;
      item.appendChild(pill);
      var waits = document.createElement("span");
      waits.className = "muted";
      waits.textContent = "waits for " + order.waits_for + (order.until ? " · until " + clock(order.until) : "");
      item.appendChild(waits);
      if (order.settle) {
        var form = document.createElement("form");
        form.className = "settle-inline";
        var input = document.createElement("input");
        input.placeholder = "broker order id";
        input.setAttribute("aria-label", "Broker order id for order " + order.id);
        form.appendChild(input);
        var placed = button("Placed", function () {
          var orderid = input.value.trim();
          if (!orderid) { alertBox("Enter the broker's order id first", true); return; }
          act("settle", [order.id], { placed: true, broker_orderid: orderid }).then(refresh);
        });
        placed.className += " settle-placed";
        form.appendChild(placed);
        var notPlaced = button("Not placed", function () {
          if (window.confirm("Send order #" + order.id + " again? Only if the broker's orderbook does not have it.")) {
            act("settle", [order.id], { placed: false }).then(refresh);
          }
        }, true);
        notPlaced.className += " settle-not-placed";
        form.appendChild(notPlaced);
        form.addEventListener("submit", function (event) { event.preventDefault(); });
        item.appendChild(form);
      }
      list.appendChild(item);
    });
    document.getElementById("held-empty").hidden = data.held.length > 0;
  }

  /* The server draws the pictures (escaped SVG); parsed as SVG, never as HTML. */
  function renderCharts(data) {
    ["depth", "rate", "latency"].forEach(function (name) {
      var svg = new DOMParser().parseFromString(data[name], "image/svg+xml").documentElement;
      document.getElementById("chart-" + name).replaceChildren(document.importNode(svg, true));
    });
  }

  function initIndex() {
    var filters = document.getElementById("filters");
    /* Filters live in the URL both ways: a shared link opens filtered, and every change
       is written back to the address bar. */
    new URLSearchParams(window.location.search).forEach(function (value, key) {
      if (filters.elements[key]) { filters.elements[key].value = value; }
    });
    function chosen() {
      var params = new URLSearchParams();
      new FormData(filters).forEach(function (value, key) { if (value) { params.set(key, value); } });
      return params;
    }
    function query() {
      var params = chosen();
      if (!params.get("state")) { params.set("state", "dead"); }
      params.set("per_page", "100");
      return params.toString();
    }
    /* Refreshes overlap (events, timer, actions); only the newest one may paint, so a slow
       older answer never overwrites a newer one. */
    var latest = 0;
    function refresh() {
      var mine = ++latest;
      function paint(render) {
        return function (data) { if (mine === latest) { render(data); } };
      }
      return Promise.all([
        api("stats").then(paint(renderStats)),
        api("orders?" + query()).then(paint(function (data) {
          renderDead(data, refresh);
          renderFilterButtons(data.total);
        })),
        api("orders?state=pending,sending,in_doubt&per_page=100").then(paint(function (data) { renderOpen(data, refresh); })),
        api("held").then(paint(function (data) { renderHeld(data, refresh); })),
        api("rejected").then(paint(function (data) { renderRejected(data, refresh); }))
      ]).catch(function (error) { alertBox("Could not load the queue: " + error.message, true); });
    }
    function refreshCharts() {
      return api("charts").then(renderCharts)
        .catch(function (error) { alertBox("Could not draw the charts: " + error.message, true); });
    }
    /* "All rejected for strategy S today": every dead order the filter matches, not only
       the rows on screen. */
    function filterObject() {
      var chosenFilter = {};
      chosen().forEach(function (value, key) { chosenFilter[key] = value; });
      return chosenFilter;
    }
    function renderFilterButtons(total) {
      var dead = (chosen().get("state") || "dead") === "dead";
      ["replay", "dismiss"].forEach(function (action) {
        var b = document.getElementById("filter-" + action);
        b.hidden = !dead || !total;
        b.textContent = (action === "replay" ? "Replay" : "Dismiss") + " all " + total + " matching";
        b.dataset.total = total;
      });
    }
    ["replay", "dismiss"].forEach(function (action) {
      document.getElementById("filter-" + action).addEventListener("click", function (event) {
        var total = event.target.dataset.total;
        if (action === "replay" && !window.confirm("Replay all " + total + " dead orders matching this filter?" +
            (total > 500 ? " (500 at a time)" : ""))) { return; }
        act(action, null, { filter: filterObject() }).then(refresh);
      });
    });
    function applyFilters(event) {
      if (event) { event.preventDefault(); }
      var params = chosen().toString();
      window.history.replaceState(null, "", window.location.pathname + (params ? "?" + params : ""));
      refresh();
    }
    filters.addEventListener("submit", applyFilters);
    filters.addEventListener("change", applyFilters);
    document.getElementById("select-all").addEventListener("change", function (event) {
      document.querySelectorAll("#dead-table tbody input").forEach(function (box) { box.checked = event.target.checked; });
      updateBulkButtons();
    });
    document.getElementById("bulk-replay").addEventListener("click", function () { act("replay", selectedIds()).then(refresh); });
    document.getElementById("bulk-dismiss").addEventListener("click", function () { act("dismiss", selectedIds()).then(refresh); });
    var soon = debounce(refresh, 150);
    var chartsSoon = debounce(refreshCharts, 2000);
    connectLive(function () { soon(); chartsSoon(); }, function () { soon(); chartsSoon(); });
    refresh();
    refreshCharts();
    setInterval(refresh, 15000);
    setInterval(refreshCharts, 15000);
  }

  /* ---------------------------------------------------------------- detail page */

  function initDetail(orderId) {
    function render(order) {
      var state = document.getElementById("order-state");
      state.textContent = order.state;
      state.className = "pill state-" + order.state;
      document.getElementById("f-reason").textContent = order.dead_reason || "–";
      document.getElementById("f-error").textContent = order.last_error || "–";
      document.getElementById("f-attempts").textContent = order.attempts;
      document.getElementById("f-orderid").textContent = order.broker_orderid || "–";
      document.getElementById("f-payload").textContent = JSON.stringify(order.payload, null, 2);
      document.getElementById("replay").hidden = order.state !== "dead";
      document.getElementById("dismiss").hidden = order.state !== "dead";
      document.getElementById("cancel").hidden = order.state !== "pending";
      document.getElementById("settle").hidden = !(order.state === "in_doubt" ||
        (order.state === "dead" && order.dead_reason === "in_doubt"));
      var body = document.querySelector("#attempts-table tbody");
      body.replaceChildren();
      order.trail.forEach(function (a) {
        var row = document.createElement("tr");
        [a.at, a.kind, a.outcome, a.http_status,
         a.latency_ms === null ? "" : Math.round(a.latency_ms) + " ms",
         a.actor, a.broker_orderid, a.message].forEach(function (value) { cell(row, value); });
        body.appendChild(row);
      });
    }
    function refresh() { return api("orders/" + orderId).then(render); }
    document.getElementById("replay").addEventListener("click", function () { act("replay", [orderId]).then(refresh); });
    document.getElementById("dismiss").addEventListener("click", function () { act("dismiss", [orderId]).then(refresh); });
    document.getElementById("cancel").addEventListener("click", function () { act("cancel", [orderId]).then(refresh); });
    document.getElementById("settle").addEventListener("submit", function (event) {
      event.preventDefault();
      var orderid = document.getElementById("settle-orderid").value.trim();
      if (!orderid) { alertBox("Enter the broker's order id first", true); return; }
      act("settle", [orderId], { placed: true, broker_orderid: orderid }).then(refresh);
    });
    document.getElementById("settle-not-placed").addEventListener("click", function () {
      if (window.confirm("Send order #" + orderId + " again? Only if the broker's orderbook does not have it.")) {
        act("settle", [orderId], { placed: false }).then(refresh);
      }
    });
    connectLive(function (event) { if (event.id === orderId) { refresh(); } }, refresh);
  }

  document.getElementById("theme-toggle").addEventListener("click", function () {
    var next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("oq-theme", next);
  });

  /* The page says which it is (no inline script: OpenAlgo's CSP allows none). */
  var page = document.body.dataset.page;
  if (page === "index") { initIndex(); }
  if (page === "detail") { initDetail(Number(document.body.dataset.orderId)); }
})();
