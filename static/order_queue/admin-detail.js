/* Order-queue admin page: one order, its payload and its attempt trail.  Needs admin.js
   first. */
(function () {
  "use strict";

  var oq = window.orderQueue;
  var api = oq.api, cell = oq.cell, act = oq.act, alertBox = oq.alertBox,
    connectLive = oq.connectLive;

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

  if (document.body.dataset.page === "detail") { initDetail(Number(document.body.dataset.orderId)); }
})();
