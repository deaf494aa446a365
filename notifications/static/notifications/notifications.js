/* Django notification streams: the browser client. No dependencies, no build step.
 *
 * One file, two roles:
 *  - in a page, it connects to the browser's one shared stream and keeps the widget
 *    ({% notifications_widget %}) live, or just fires DOM events for a custom UI
 *    ({% notifications_script %});
 *  - loaded as a SharedWorker (same URL), it holds that one EventSource for every tab.
 *
 * One stream per browser: over HTTP/1.1 a browser opens about 6 connections per origin, and
 * a 7th tab holding an EventSource would block every request to the site. Where SharedWorker
 * is missing (or fails), the tabs elect a leader over BroadcastChannel; the leader holds the
 * stream and relays it, and another tab takes over when it goes. Without either, each tab
 * holds its own stream.
 *
 * Text from the server is only ever inserted with textContent, never as HTML.
 * docs/client.md documents the template tags, the DOM events and the options.
 */
(function (global) {
  "use strict";

  var BACKOFF_BASE_MS = 1000; // first retry after a non-200 answer: 0.5–1 s
  var BACKOFF_MAX_MS = 30000; // doubling up to 30 s (15–30 s with jitter)
  var BUFFER_SIZE = 200; // recent notifications a hub keeps to catch up tabs that join
  var HEARTBEAT_MS = 1000; // leader election: the leader says so this often
  var LEASE_MS = 3000; // ... and is presumed gone after this long without a word
  var CLAIM_WAIT_MS = 250; // a candidate becomes leader if nobody objects within this
  var LIST_LIMIT = 100; // the JSON API's largest page

  // ---------------------------------------------------------------------------------------
  // Small helpers, usable in a page and in a worker.

  function toId(value) {
    var n = parseInt(value, 10);
    return isFinite(n) && n >= 0 ? n : null;
  }

  function maxId(a, b) {
    if (a === null || a === undefined) return b === undefined ? null : b;
    if (b === null || b === undefined) return a;
    return Math.max(a, b);
  }

  function backoffDelay(failures) {
    var ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, failures));
    return ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
  }

  function absolute(url) {
    return new URL(url, global.location.href).toString();
  }

  /** GET the JSON API (newest first); calls back with the body, or null after 3 tries. */
  function loadList(apiUrl, after, callback) {
    var url = new URL(apiUrl, global.location.href);
    url.searchParams.set("limit", String(LIST_LIMIT));
    if (after !== null && after !== undefined) url.searchParams.set("after", String(after));
    var attempt = 0;
    (function go() {
      fetch(url.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(callback, function () {
          attempt += 1;
          if (attempt < 3) setTimeout(go, backoffDelay(attempt));
          else callback(null);
        });
    })();
  }

  // ---------------------------------------------------------------------------------------
  // Hub: the one EventSource of a browser, in the SharedWorker or in the leader tab.
  //
  // post(message, target) sends to one tab (target) or to every tab (target === null).
  // Messages: {kind: "state", state, user, cursor}, {kind: "notification", data},
  // {kind: "read", data}, {kind: "list", results, unread_count, replace, through},
  // {kind: "gap", after} (the tab loads what it missed from the API itself).

  function Hub(config, post) {
    this.config = config; // streamUrl, apiUrl, user (the username pages were rendered for)
    this.post = post;
    this.es = null;
    this.timer = null;
    this.failures = 0;
    this.cursor = null; // everything up to this id has been received
    this.user = undefined; // from the last hello
    this.state = "connecting";
    this.buffer = []; // recent notifications, ascending ids
    this.bufferFrom = null; // the buffer holds every notification with id > bufferFrom
    this.pending = []; // tabs that joined before the first hello: [target, cursor]
    this.helloSeen = false;
    this.resync = false; // a connection was lost: read marks may have been missed
    this.stopped = false;
  }

  Hub.prototype.start = function (cursor) {
    if (this.es || this.timer) return;
    this.cursor = cursor;
    this.bufferFrom = cursor; // a stream opened at N replays everything after N
    this.open();
  };

  Hub.prototype.open = function () {
    var self = this;
    this.timer = null;
    if (this.stopped) return;
    var url = new URL(this.config.streamUrl, global.location.href);
    // A new EventSource never sends Last-Event-ID: the query parameter carries the cursor.
    if (this.cursor !== null) url.searchParams.set("last_event_id", String(this.cursor));
    var es = (this.es = new EventSource(url.toString()));
    function mine(handler) {
      return function (e) {
        if (es === self.es) handler.call(self, e);
      };
    }
    es.addEventListener("hello", mine(this.onHello));
    es.addEventListener("notification", mine(this.onNotification));
    es.addEventListener("read", mine(this.onRead));
    es.addEventListener("reset", mine(this.onReset));
    es.onerror = mine(function () {
      this.resync = true;
      this.setState("reconnecting");
      // A non-200 answer (a proxy's 502/503, a 429, a 403) closes an EventSource for good;
      // network errors and clean ends leave it CONNECTING and the browser retries itself.
      if (es.readyState === 2) this.retryLater();
    });
  };

  Hub.prototype.retryLater = function () {
    if (this.es) this.es.close();
    this.es = null;
    if (this.stopped || this.timer) return;
    var delay = backoffDelay(this.failures);
    this.failures += 1;
    this.timer = setTimeout(this.open.bind(this), delay);
  };

  /** Reconnect at once (the network is back, or a fresh page proves the session is). */
  Hub.prototype.reconnectNow = function () {
    if (this.stopped) return;
    this.resync = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.es) this.es.close();
    this.es = null;
    this.open();
  };

  Hub.prototype.stop = function () {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.es) this.es.close();
    this.es = null;
  };

  Hub.prototype.advance = function (lastEventId) {
    var id = toId(lastEventId);
    if (id !== null) this.cursor = maxId(this.cursor, id);
  };

  Hub.prototype.setState = function (state) {
    this.state = state;
    this.post(this.stateMessage(), null);
  };

  Hub.prototype.stateMessage = function () {
    return { kind: "state", state: this.state, user: this.user, cursor: this.cursor };
  };

  Hub.prototype.onHello = function (e) {
    var data = JSON.parse(e.data);
    this.advance(e.lastEventId);
    if (this.bufferFrom === null) this.bufferFrom = this.cursor; // opened without a cursor
    this.failures = 0;
    this.user = data.user;
    this.setState("connected");
    var pending = this.pending;
    this.pending = [];
    for (var i = 0; i < pending.length; i++) this.catchUp(pending[i][0], pending[i][1]);
    if (this.helloSeen && this.resync && this.user) this.refresh();
    this.helloSeen = true;
    this.resync = false;
  };

  Hub.prototype.onNotification = function (e) {
    var n = JSON.parse(e.data);
    this.advance(e.lastEventId);
    var last = this.buffer.length ? this.buffer[this.buffer.length - 1].id : null;
    if (last !== null && n.id <= last) return; // already relayed (ids only grow)
    this.buffer.push(n);
    if (this.buffer.length > BUFFER_SIZE) this.bufferFrom = this.buffer.shift().id;
    this.post({ kind: "notification", data: n }, null);
  };

  Hub.prototype.onRead = function (e) {
    var data = JSON.parse(e.data);
    var all = data.ids === "all";
    var ids = {};
    if (!all) for (var i = 0; i < data.ids.length; i++) ids[data.ids[i]] = true;
    for (var j = 0; j < this.buffer.length; j++) {
      if (all || ids[this.buffer[j].id]) this.buffer[j].read = true;
    }
    this.post({ kind: "read", data: data }, null);
  };

  Hub.prototype.onReset = function (e) {
    var data = JSON.parse(e.data);
    this.advance(e.lastEventId);
    this.cursor = maxId(this.cursor, toId(data.cursor));
    this.buffer = [];
    this.bufferFrom = this.cursor;
    var self = this;
    var through = this.cursor;
    loadList(this.config.apiUrl, null, function (body) {
      if (!body) return;
      self.post(
        { kind: "list", results: body.results, unread_count: body.unread_count, replace: true, through: through },
        null
      );
    });
  };

  /** After a reconnect: read marks made meanwhile came as events nobody received. */
  Hub.prototype.refresh = function () {
    var self = this;
    loadList(this.config.apiUrl, null, function (body) {
      if (body) self.post({ kind: "list", results: body.results, unread_count: body.unread_count, replace: false }, null);
    });
  };

  /** A tab (re)joins, having seen everything up to ``cursor`` (null: nothing yet). */
  Hub.prototype.join = function (target, cursor) {
    if (!this.es && !this.timer) {
      this.stopped = false;
      this.start(cursor);
    } else if (this.helloSeen && this.config.user && this.user === null) {
      // A page rendered for a signed-in user just loaded: the session is back, so the
      // stream that said "signed out" is stale.
      this.reconnectNow();
    }
    this.post(this.stateMessage(), target);
    if (!this.helloSeen) this.pending.push([target, cursor]);
    else this.catchUp(target, cursor);
  };

  Hub.prototype.catchUp = function (target, cursor) {
    var from = cursor === null ? 0 : cursor;
    if (this.cursor === null || from >= this.cursor) return;
    if (this.bufferFrom !== null && from >= this.bufferFrom) {
      for (var i = 0; i < this.buffer.length; i++) {
        if (this.buffer[i].id > from) this.post({ kind: "notification", data: this.buffer[i] }, target);
      }
    } else {
      this.post({ kind: "gap", after: from }, target);
    }
  };

  // ---------------------------------------------------------------------------------------
  // Worker side: loaded with `new SharedWorker(thisScript)`, one hub for every tab.

  if (typeof global.document === "undefined") {
    if (typeof global.onconnect !== "undefined" || "SharedWorkerGlobalScope" in global) {
      runSharedWorker();
    }
    return;
  }

  function runSharedWorker() {
    var ports = [];
    var hub = null;
    function post(message, target) {
      var to = target ? [target] : ports.slice();
      for (var i = 0; i < to.length; i++) to[i].postMessage(message);
    }
    global.addEventListener("online", function () {
      if (hub && hub.timer) hub.reconnectNow();
    });
    global.onconnect = function (event) {
      var port = event.ports[0];
      port.onmessage = function (e) {
        var m = e.data || {};
        if (m.kind === "join") {
          if (typeof EventSource === "undefined") {
            port.postMessage({ kind: "unsupported" });
            return;
          }
          if (ports.indexOf(port) < 0) ports.push(port);
          if (!hub) hub = new Hub(m.config, post);
          hub.join(port, m.cursor);
        } else if (m.kind === "leave") {
          var at = ports.indexOf(port);
          if (at >= 0) ports.splice(at, 1);
          if (!ports.length && hub) {
            hub.stop(); // the last tab went: nobody to stream for
            hub = null;
          }
        }
      };
      port.start();
    };
  }

  // ---------------------------------------------------------------------------------------
  // Page side: the client. Dispatches DOM events on `document`:
  //   notifications:notification  detail = the notification (each id once)
  //   notifications:read          detail = {ids: [..] | "all", unread_count}
  //   notifications:list          detail = {results, unread_count, replace, through}
  //   notifications:state         detail = {state, user}; state is one of connecting,
  //                               connected, reconnecting, signed-out, session-changed

  if (global.DjangoNotifications) return; // the script was included twice

  var script = document.currentScript || document.querySelector("script[data-notifications-client]");

  function readConfig(el) {
    var d = (el && el.dataset) || {};
    return {
      scriptUrl: el ? el.src : "",
      streamUrl: absolute(d.streamUrl || "/notifications/stream/"),
      apiUrl: absolute(d.apiUrl || "/notifications/api/"),
      readUrl: d.readUrl || "", // with {id} in place of the notification's id
      readAllUrl: d.readAllUrl || "",
      csrfToken: d.csrfToken || "",
      user: d.user || "",
      lastEventId: toId(d.lastEventId),
      transport: d.transport || "auto", // auto | shared-worker | leader | direct
    };
  }

  function Client(config) {
    this.config = config;
    this.cursor = config.lastEventId;
    this.seen = {};
    this.state = "connecting";
    this.user = undefined;
    this.transport = null; // "shared-worker", "leader", "follower" or "direct"
    this.unread = null;
    this.links = null;
  }

  Client.prototype.emit = function (name, detail) {
    document.dispatchEvent(new CustomEvent("notifications:" + name, { detail: detail }));
  };

  Client.prototype.markSeen = function (ids) {
    for (var i = 0; i < ids.length; i++) this.seen[ids[i]] = true;
  };

  /** A page rendered for one user must not show another's stream (or a signed-out one). */
  Client.prototype.displayState = function (m) {
    if (m.state !== "connected") return m.state;
    if ((m.user || "") === this.config.user) return "connected";
    return m.user === null ? "signed-out" : "session-changed";
  };

  Client.prototype.foreign = function () {
    return this.state === "session-changed";
  };

  Client.prototype.receive = function (m) {
    if (m.kind === "state") {
      this.cursor = maxId(this.cursor, m.cursor);
      this.user = m.user;
      var state = this.displayState(m);
      if (state !== this.state) {
        this.state = state;
        this.emit("state", { state: state, user: m.user });
      }
    } else if (m.kind === "notification") {
      var n = m.data;
      this.cursor = maxId(this.cursor, n.id);
      if (this.seen[n.id] || this.foreign()) return;
      this.seen[n.id] = true;
      if (n.read === false && this.unread !== null) this.unread += 1;
      this.emit("notification", n);
    } else if (m.kind === "read") {
      if (this.foreign()) return;
      if (typeof m.data.unread_count === "number") this.unread = m.data.unread_count;
      this.emit("read", m.data);
    } else if (m.kind === "list") {
      if (this.foreign()) return;
      this.applyList(m);
    } else if (m.kind === "gap") {
      var self = this;
      loadList(this.config.apiUrl, m.after, function (body) {
        if (body) self.applyList({ results: body.results, unread_count: body.unread_count, replace: false });
      });
    } else if (m.kind === "unsupported") {
      this.fallBack();
    }
  };

  Client.prototype.applyList = function (m) {
    var through = maxId(m.through, m.results.length ? m.results[0].id : null);
    if (m.replace) {
      var kept = {};
      for (var id in this.seen) if (through === null || +id > through) kept[id] = true;
      this.seen = kept;
    }
    for (var i = 0; i < m.results.length; i++) {
      this.seen[m.results[i].id] = true;
      this.cursor = maxId(this.cursor, m.results[i].id);
    }
    if (typeof m.unread_count === "number") this.unread = m.unread_count;
    this.emit("list", { results: m.results, unread_count: m.unread_count, replace: !!m.replace, through: through });
  };

  Client.prototype.start = function () {
    var t = this.config.transport;
    var canShare = typeof SharedWorker === "function" && this.config.scriptUrl;
    if ((t === "auto" || t === "shared-worker") && canShare && this.startSharedWorker()) return;
    if ((t === "auto" || t === "shared-worker" || t === "leader") && typeof BroadcastChannel === "function") {
      this.startLeaderElection();
      return;
    }
    this.startDirect();
  };

  /** Every tab of one user, on one stream URL, shares a worker (or a channel). */
  Client.prototype.scope = function () {
    return "django-notifications:" + this.config.streamUrl + ":" + this.config.user;
  };

  Client.prototype.startSharedWorker = function () {
    var self = this;
    var worker;
    try {
      worker = new SharedWorker(this.config.scriptUrl, { name: this.scope() });
    } catch (err) {
      return false; // e.g. the static files live on another origin
    }
    this.transport = "shared-worker";
    this.port = worker.port;
    worker.onerror = function () {
      self.fallBack();
    };
    this.port.onmessage = function (e) {
      self.receive(e.data);
    };
    this.port.start();
    this.joinWorker();
    global.addEventListener("pagehide", function () {
      if (self.port) self.port.postMessage({ kind: "leave" });
    });
    global.addEventListener("pageshow", function (e) {
      if (e.persisted && self.port) self.joinWorker(); // back from the bfcache
    });
    return true;
  };

  Client.prototype.joinWorker = function () {
    var c = this.config;
    this.port.postMessage({
      kind: "join",
      cursor: this.cursor,
      config: { streamUrl: c.streamUrl, apiUrl: c.apiUrl, user: c.user },
    });
  };

  /** The worker failed to load or cannot stream: elect a leader tab instead. */
  Client.prototype.fallBack = function () {
    if (this.transport !== "shared-worker") return;
    if (this.port) this.port.close();
    this.port = null;
    this.transport = null;
    if (typeof BroadcastChannel === "function") this.startLeaderElection();
    else this.startDirect();
  };

  Client.prototype.startDirect = function () {
    var self = this;
    this.transport = "direct";
    this.hub = new Hub(this.config, function (message) {
      self.receive(message);
    });
    this.hub.join(null, this.cursor);
    global.addEventListener("online", function () {
      if (self.hub.timer) self.hub.reconnectNow();
    });
  };

  // Leader election over BroadcastChannel. The leader says "hb" every HEARTBEAT_MS; a tab
  // that has heard nothing for LEASE_MS (or hears "resign") claims; a claim stands if no
  // leader and no smaller-id candidate objects within CLAIM_WAIT_MS. Two leaders (a split)
  // resolve to the smaller id. A new leader opens the stream at the tabs' shared cursor, so
  // the server replays whatever arrived during the handover; tabs drop duplicates by id.
  Client.prototype.startLeaderElection = function () {
    var self = this;
    this.transport = "follower";
    this.tabId = Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
    this.leaderId = null;
    this.heardAt = Date.now();
    this.candidate = false;
    var channel = (this.channel = new BroadcastChannel(this.scope()));
    channel.onmessage = function (e) {
      self.onChannel(e.data || {});
    };
    // A leader answers "ping" at once (and this tab then joins it); silence means none.
    channel.postMessage({ t: "ping", from: this.tabId });
    setTimeout(function () {
      if (self.leaderId === null && !self.candidate && self.transport === "follower") self.claim();
    }, 2 * CLAIM_WAIT_MS);
    this.electionTimer = setInterval(function () {
      self.tick();
    }, HEARTBEAT_MS);
    global.addEventListener("pagehide", function () {
      self.resign();
    });
    global.addEventListener("pageshow", function (e) {
      if (e.persisted) {
        self.heardAt = Date.now();
        self.leaderId = null; // whoever answers the ping is the leader to join
        self.channel.postMessage({ t: "ping", from: self.tabId });
      }
    });
    global.addEventListener("online", function () {
      if (self.hub && self.hub.timer) self.hub.reconnectNow();
    });
  };

  Client.prototype.tick = function () {
    if (this.transport === "leader") {
      this.channel.postMessage({ t: "hb", from: this.tabId });
    } else if (!this.candidate && Date.now() - this.heardAt > LEASE_MS) {
      this.claim();
    }
  };

  Client.prototype.claim = function () {
    var self = this;
    this.candidate = true;
    this.channel.postMessage({ t: "claim", from: this.tabId });
    setTimeout(function () {
      if (self.candidate) self.lead();
    }, CLAIM_WAIT_MS);
  };

  Client.prototype.lead = function () {
    var self = this;
    this.candidate = false;
    this.transport = "leader";
    this.leaderId = this.tabId;
    this.hub = new Hub(this.config, function (message, target) {
      if (target === null || target === self.tabId) self.receive(message);
      if (target !== self.tabId) self.channel.postMessage({ t: "msg", to: target, msg: message });
    });
    this.channel.postMessage({ t: "hb", from: this.tabId });
    this.hub.join(this.tabId, this.cursor);
  };

  Client.prototype.follow = function (leaderId) {
    var changed = leaderId !== this.leaderId;
    this.candidate = false;
    this.heardAt = Date.now();
    this.leaderId = leaderId;
    if (this.transport === "leader") {
      this.hub.stop();
      this.hub = null;
      this.transport = "follower";
      changed = true;
    }
    // A new leader's hub knows nothing of this tab: tell it how far this tab got.
    if (changed) this.channel.postMessage({ t: "join", from: this.tabId, cursor: this.cursor });
  };

  Client.prototype.onChannel = function (m) {
    var leading = this.transport === "leader";
    if (m.t === "msg") {
      if (!leading && (m.to === null || m.to === this.tabId)) this.receive(m.msg);
    } else if (m.t === "hb") {
      if (leading && m.from > this.tabId) this.channel.postMessage({ t: "hb", from: this.tabId });
      else this.follow(m.from);
    } else if (m.t === "claim" || m.t === "ping") {
      if (leading) this.channel.postMessage({ t: "hb", from: this.tabId });
      else if (m.t === "claim" && this.candidate && m.from < this.tabId) {
        this.candidate = false; // the smaller id wins; wait for its heartbeat
        this.heardAt = Date.now();
      }
    } else if (m.t === "join") {
      if (leading) this.hub.join(m.from, toId(m.cursor));
    } else if (m.t === "resign") {
      if (m.from === this.leaderId && !leading) {
        this.leaderId = null;
        this.claim();
      }
    }
  };

  Client.prototype.resign = function () {
    if (this.transport !== "leader") return;
    this.hub.stop();
    this.hub = null;
    this.transport = "follower";
    this.channel.postMessage({ t: "resign", from: this.tabId });
  };

  // Marking read: a POST with Django's CSRF token; every tab then learns it from `read`.

  function csrfToken(config) {
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : config.csrfToken;
  }

  Client.prototype.post = function (url) {
    var self = this;
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(this.config), Accept: "application/json" },
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
        // Apply it here at once; the stream's `read` event will confirm it in every tab.
        self.receive({ kind: "read", data: { ids: body.read === "all" ? "all" : [body.id], unread_count: body.unread_count } });
        return body;
      });
    });
  };

  /** POST /notifications/api/<id>/read/; resolves with the API's JSON. */
  Client.prototype.markRead = function (id) {
    return this.post(this.config.readUrl.replace("{id}", encodeURIComponent(String(id))));
  };

  /** POST /notifications/api/read-all/; resolves with the API's JSON. */
  Client.prototype.markAllRead = function () {
    return this.post(this.config.readAllUrl);
  };

  // ---------------------------------------------------------------------------------------
  // The widget: keeps {% notifications_widget %}'s server-rendered markup live.

  var STATE_TEXT = {
    connecting: "connecting…",
    connected: "connected",
    reconnecting: "reconnecting…",
    "signed-out": "signed out — sign in again",
    "session-changed": "signed in elsewhere — reload",
  };

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function formatTime(node) {
    var when = new Date(node.getAttribute("datetime"));
    if (isNaN(when.getTime())) return;
    node.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    node.title = when.toISOString();
  }

  function safeUrl(url) {
    return typeof url === "string" && /^(https?:\/\/|\/(?!\/))/i.test(url) ? url : null;
  }

  function Widget(root, client) {
    this.root = root;
    this.client = client;
    this.list = root.querySelector(".n-list");
    this.state = root.querySelector(".n-state");
    this.badge = root.querySelector(".n-badge");
    this.signedIn = !!client.config.user;
    var unread = this.badge ? toId(this.badge.getAttribute("data-count")) : null;
    client.unread = this.signedIn ? unread || 0 : null;
    var ids = [];
    var items = this.list.querySelectorAll(".n-item[data-id]");
    for (var i = 0; i < items.length; i++) ids.push(toId(items[i].getAttribute("data-id")));
    client.markSeen(ids);
    var times = this.list.querySelectorAll("time[datetime]");
    for (var j = 0; j < times.length; j++) formatTime(times[j]);
    var self = this;
    document.addEventListener("notifications:state", function (e) {
      self.showState(e.detail.state);
    });
    document.addEventListener("notifications:notification", function (e) {
      self.add(e.detail);
      self.showUnread();
    });
    document.addEventListener("notifications:read", function (e) {
      self.markRead(e.detail.ids);
      self.showUnread();
    });
    document.addEventListener("notifications:list", function (e) {
      self.applyList(e.detail);
      self.showUnread();
    });
    root.addEventListener("submit", function (e) {
      self.onSubmit(e);
    });
    if (this.state) this.state.hidden = false;
    this.showState(client.state);
  }

  Widget.prototype.showState = function (state) {
    if (!this.state) return;
    this.state.setAttribute("data-state", state);
    this.state.textContent = STATE_TEXT[state] || state;
  };

  Widget.prototype.showUnread = function () {
    var count = this.client.unread;
    if (!this.badge || count === null) return;
    this.badge.setAttribute("data-count", String(count));
    this.badge.textContent = String(count);
    this.badge.setAttribute("aria-label", count === 1 ? "1 unread notification" : count + " unread notifications");
  };

  Widget.prototype.item = function (id) {
    return this.list.querySelector('.n-item[data-id="' + String(toId(id)) + '"]');
  };

  /** The same markup as notifications/_item.html, built node by node (text as text). */
  Widget.prototype.render = function (n) {
    var level = /^(info|success|warning|error)$/.test(n.level) ? n.level : "info";
    var unread = n.read === false;
    var li = el("li", "n-item level-" + level + (unread ? " unread" : ""));
    li.setAttribute("data-id", String(n.id));
    li.setAttribute("tabindex", "-1");
    var head = el("div", "n-head");
    head.appendChild(el("span", "n-level", level));
    head.appendChild(el("strong", "n-title", n.title));
    var time = el("time", null, n.created_at);
    time.setAttribute("datetime", n.created_at);
    formatTime(time);
    head.appendChild(time);
    li.appendChild(head);
    if (n.body) li.appendChild(el("p", "n-body", n.body));
    var foot = el("div", "n-foot");
    var href = safeUrl(n.url);
    if (href) {
      var link = el("a", "n-url", "Open");
      link.href = href;
      foot.appendChild(link);
    }
    if (unread && this.client.config.readUrl) {
      var form = el("form", "n-read");
      form.method = "post";
      form.action = this.client.config.readUrl.replace("{id}", String(n.id));
      var button = el("button", "n-read-button", "Mark as read");
      button.type = "submit";
      button.setAttribute("aria-label", "Mark “" + n.title + "” as read");
      form.appendChild(button);
      foot.appendChild(form);
    }
    if (foot.firstChild) li.appendChild(foot);
    return li;
  };

  /** Insert in id order (newest first): live ones go on top, gap fills where they belong. */
  Widget.prototype.add = function (n) {
    if (this.item(n.id)) return;
    var empty = this.list.querySelector(".n-empty");
    if (empty) empty.parentNode.removeChild(empty);
    var node = this.render(n);
    var items = this.list.querySelectorAll(".n-item[data-id]");
    for (var i = 0; i < items.length; i++) {
      if (toId(items[i].getAttribute("data-id")) < n.id) {
        this.list.insertBefore(node, items[i]);
        return;
      }
    }
    this.list.appendChild(node);
  };

  Widget.prototype.markRead = function (ids) {
    var nodes =
      ids === "all" ? this.list.querySelectorAll(".n-item.unread") : ids.map(this.item, this).filter(Boolean);
    var focused = document.activeElement;
    for (var i = 0; i < nodes.length; i++) {
      var li = nodes[i];
      li.classList.remove("unread");
      var form = li.querySelector(".n-read");
      if (!form) continue;
      // Keep the keyboard user in place: focus moves to the item, not to the page's top.
      if (form.contains(focused)) li.focus();
      form.parentNode.removeChild(form);
    }
  };

  Widget.prototype.applyList = function (m) {
    var results = m.results;
    this.list.setAttribute("aria-busy", "true");
    if (m.replace) {
      var keep = {};
      for (var i = 0; i < results.length; i++) keep[results[i].id] = true;
      var items = this.list.querySelectorAll(".n-item[data-id]");
      for (var j = 0; j < items.length; j++) {
        var id = toId(items[j].getAttribute("data-id"));
        if (!keep[id] && (m.through === null || id <= m.through)) items[j].parentNode.removeChild(items[j]);
      }
    }
    for (var k = results.length - 1; k >= 0; k--) {
      var n = results[k];
      var existing = this.item(n.id);
      if (!existing) this.add(n);
      else if (n.read === true && existing.classList.contains("unread")) this.markRead([n.id]);
    }
    if (!this.list.querySelector(".n-item") && !this.list.querySelector(".n-empty")) {
      this.list.appendChild(el("li", "n-empty", "No notifications yet."));
    }
    this.list.removeAttribute("aria-busy");
  };

  Widget.prototype.onSubmit = function (e) {
    var form = e.target;
    var client = this.client;
    // Not `disabled`: that would drop the keyboard focus before the item is updated.
    var busy = function (on) {
      if (on && form.getAttribute("aria-busy") === "true") return false;
      form.setAttribute("aria-busy", on ? "true" : "false");
      return true;
    };
    if (form.classList.contains("n-read")) {
      var li = form.closest(".n-item");
      if (!li || !client.config.readUrl) return;
      e.preventDefault();
      if (!busy(true)) return;
      client.markRead(toId(li.getAttribute("data-id"))).catch(function () {
        busy(false);
      });
    } else if (form.classList.contains("n-read-all")) {
      if (!client.config.readAllUrl) return;
      e.preventDefault();
      if (!busy(true)) return;
      client.markAllRead().then(
        function () {
          busy(false);
        },
        function () {
          busy(false);
        }
      );
    }
  };

  // ---------------------------------------------------------------------------------------

  var client = new Client(readConfig(script));
  global.DjangoNotifications = client;
  function boot() {
    var root = document.querySelector("[data-notifications]");
    if (root) client.widget = new Widget(root, client);
    client.start();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})(self);
