/* Django notification streams: the browser client's entry point (a native ES module, no build).
 *
 * Loaded by {% notifications_script %} / {% notifications_widget %} as
 * <script type="module" data-notifications-client data-…>. It reads its configuration from that
 * tag, wires the browser's objects into the client (client.js), keeps the widget (widget.js) live
 * when the page has one, and exposes the client as window.DjangoNotifications.
 * The modules: protocol.js (events, constants, link rule), owner.js (the one EventSource),
 * election.js (leader tab), transport.js (SharedWorker / BroadcastChannel / direct),
 * worker.js (the SharedWorker), client.js (API, DOM events), widget.js (rendering).
 * docs/client.md documents the template tags, the DOM events and the options.
 */
import { Client, readConfig } from "./client.js";
import { Widget } from "./widget.js";

function browserDeps(script) {
  const workerUrl = (script && script.dataset.workerUrl) || new URL("./worker.js", import.meta.url).toString();
  return {
    emit: (name, detail) => document.dispatchEvent(new CustomEvent(`notifications:${name}`, { detail })),
    cookie: () => document.cookie,
    fetch: (...args) => window.fetch(...args),
    EventSource: window.EventSource,
    BroadcastChannel: window.BroadcastChannel,
    SharedWorker: window.SharedWorker,
    workerUrl,
    setTimeout: (fn, ms) => window.setTimeout(fn, ms),
    clearTimeout: (id) => window.clearTimeout(id),
    setInterval: (fn, ms) => window.setInterval(fn, ms),
    clearInterval: (id) => window.clearInterval(id),
    now: () => Date.now(),
    random: Math.random,
    baseUrl: window.location.href,
  };
}

function boot() {
  // A module runs once per URL, but a second copy under another URL must not start twice.
  if (window.DjangoNotifications) return;
  const script = document.querySelector("script[data-notifications-client]");
  const client = new Client(readConfig(script && script.dataset, window.location.href), browserDeps(script));
  window.DjangoNotifications = client;
  const root = document.querySelector("[data-notifications]");
  if (root) client.widget = new Widget(root, client, document);
  window.addEventListener("pagehide", () => client.pagehide());
  window.addEventListener("pageshow", (e) => client.pageshow(e.persisted));
  window.addEventListener("online", () => client.online());
  client.start();
}

boot(); // module scripts run after the document is parsed
