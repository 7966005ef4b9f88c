/* Order-queue admin page: the queue's overview (stats, dead letters, open orders, held
   instruments, broker rejections, charts).  Needs admin.js first. */
(function () {
  "use strict";

  var oq = window.orderQueue;
  var api = oq.api, cell = oq.cell, button = oq.button, age = oq.age, alertBox = oq.alertBox,
    act = oq.act, connectLive = oq.connectLive, debounce = oq.debounce, clock = oq.clock,
    orderLink = oq.orderLink, replayAndDismiss = oq.replayAndDismiss;

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
      orderLink(row, order);
      cell(row, order.strategy);
      cell(row, order.symbol);
      cell(row, order.payload.action);
      cell(row, order.dead_reason);
      cell(row, order.last_error, "error-cell");
      cell(row, order.attempts);
      cell(row, age(order.age_seconds));
      replayAndDismiss(row, order, refresh, ["Replay", "Dismiss"]);
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
      orderLink(row, order);
      cell(row, order.strategy);
      cell(row, order.symbol);
      cell(row, order.payload.action);
      cell(row, order.payload.quantity);
      cell(row, order.broker_status, "error-cell");
      cell(row, order.broker_message, "error-cell");
      cell(row, order.broker_orderid);
      replayAndDismiss(row, order, refresh, ["Send again", "Set aside"]);
      body.appendChild(row);
    });
    document.getElementById("rejected-empty").hidden = data.orders.length > 0;
  }

  function renderOpen(data, refresh) {
    var body = document.querySelector("#open-table tbody");
    body.replaceChildren();
    data.orders.forEach(function (order) {
      var row = document.createElement("tr");
      orderLink(row, order);
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
      pill.textContent = order.dead_reason === "in_doubt" ? "dead, in doubt" : order.state;
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

  if (document.body.dataset.page === "index") { initIndex(); }
})();
