// Live notifications for the page: one EventSource, replay by last_event_id, text as text.
(function () {
  "use strict";
  var root = document.querySelector("[data-notifications]");
  if (!root || !window.EventSource) return;
  var list = root.querySelector(".n-list");
  var state = root.querySelector(".n-state");
  var signedInAs = root.getAttribute("data-user") || "";
  var seen = {};
  var lastId = root.getAttribute("data-last-event-id") || "";
  Array.prototype.forEach.call(list.querySelectorAll("[data-id]"), function (el) { seen[el.getAttribute("data-id")] = true; });
  var source = null;
  var backoff = 1000;

  function setState(name, text) {
    state.setAttribute("data-state", name);
    state.textContent = text || name;
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function render(n) {
    var item = el("li", "n-item level-" + n.level);
    item.setAttribute("data-id", String(n.id));
    var head = el("div", "n-head");
    head.appendChild(el("span", "n-level", n.level));
    head.appendChild(el("strong", "n-title", n.title));
    var time = el("time", null, n.created_at);
    time.setAttribute("datetime", n.created_at);
    head.appendChild(time);
    item.appendChild(head);
    if (n.body) item.appendChild(el("p", "n-body", n.body));
    if (n.url && /^(https?:\/\/|\/(?!\/))/.test(n.url)) {
      var link = el("a", "n-url", "Open");
      link.href = n.url;
      item.appendChild(link);
    }
    return item;
  }

  function add(n) {
    if (seen[n.id]) return;
    seen[n.id] = true;
    var empty = list.querySelector(".n-empty");
    if (empty) empty.remove();
    list.insertBefore(render(n), list.firstChild);
  }

  function reload() {
    fetch(root.getAttribute("data-api-url") + "?limit=50", { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        list.textContent = "";
        seen = {};
        data.results.slice().reverse().forEach(add);
      });
  }

  function connect() {
    var url = new URL(root.getAttribute("data-stream-url"), window.location.href);
    if (lastId) url.searchParams.set("last_event_id", lastId);
    source = new EventSource(url.toString());
    source.addEventListener("hello", function (e) {
      lastId = e.lastEventId || lastId;
      backoff = 1000;
      var data = JSON.parse(e.data);
      if (signedInAs && data.user === null) setState("signed-out", "signed out");
      else setState("connected", "connected");
    });
    source.addEventListener("notification", function (e) {
      lastId = e.lastEventId || lastId;
      add(JSON.parse(e.data));
    });
    source.addEventListener("reset", function (e) {
      lastId = e.lastEventId || lastId;
      reload();
    });
    source.onerror = function () {
      setState("reconnecting", "reconnecting…");
      if (source.readyState === EventSource.CLOSED) {
        // A non-200 answer (a proxy's 502, a 429) stops EventSource for good: start again.
        var delay = backoff * (1 + Math.random());
        backoff = Math.min(backoff * 2, 30000);
        setTimeout(connect, delay);
      }
    };
  }
  connect();
})();
