// Live countdowns, and a reload when the set of pending approvals or an approval's state changes.
(function () {
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll(".countdown[data-expires]").forEach(function (el) {
      var left = Math.max(0, Math.round(parseFloat(el.dataset.expires) - now));
      var m = Math.floor(left / 60), s = left % 60;
      el.textContent = left > 0 ? "expires in " + m + ":" + (s < 10 ? "0" : "") + s : "expired";
    });
  }
  function get(url, then) {
    var x = new XMLHttpRequest();
    x.open("GET", url);
    x.onload = function () { if (x.status === 200) { then(JSON.parse(x.responseText)); } };
    x.send();
  }
  function poll() {
    var pending = document.getElementById("pending");
    if (pending) {
      get("/api/approvals?state=pending", function (body) {
        var ids = body.approvals.map(function (a) { return a.id; }).join(",");
        if (ids !== pending.dataset.ids) { location.reload(); }
      });
    }
    var watch = document.getElementById("watch");
    if (watch) {
      get("/api/approvals/" + watch.dataset.approval, function (a) {
        if (a.state !== watch.dataset.state || (a.execution || "") !== watch.dataset.execution) { location.reload(); }
      });
    }
  }
  tick();
  setInterval(tick, 1000);
  setInterval(poll, 1500);
})();
