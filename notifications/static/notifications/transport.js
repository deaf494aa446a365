/* Transports: how a tab reaches the browser's one stream owner.
 *
 *  - WorkerTransport: a SharedWorker (worker.js, a module worker) holds the owner; tabs talk to
 *    it over MessagePorts. serveSharedWorker() is the worker's side.
 *  - LeaderTransport: tabs elect a leader over a BroadcastChannel (election.js); the leader's
 *    owner relays to the others as {t: "msg", to, msg}.
 *  - DirectTransport: each tab owns its own stream.
 *
 * Each transport has start() (false if it cannot run here), role, pagehide(), pageshow(persisted)
 * and online(). Outside objects (SharedWorker, BroadcastChannel, timers) come in through deps.
 */
import { Election, newTabId } from "./election.js";
import { StreamOwner } from "./owner.js";
import { CHANNEL, KIND, toId } from "./protocol.js";

function ownerConfig(config) {
  return { streamUrl: config.streamUrl, apiUrl: config.apiUrl, user: config.user };
}

export class DirectTransport {
  constructor(client, deps) {
    this.client = client;
    this.deps = deps;
    this.role = "direct";
  }

  start() {
    this.owner = new StreamOwner(ownerConfig(this.client.config), (m) => this.client.receive(m), this.deps);
    this.owner.join(null, this.client.cursor);
    return true;
  }

  pagehide() {}

  pageshow() {}

  online() {
    if (this.owner.waiting) this.owner.reconnectNow();
  }
}

export class WorkerTransport {
  constructor(client, deps) {
    this.client = client;
    this.deps = deps;
    this.role = "shared-worker";
    this.port = null;
  }

  start() {
    const { SharedWorker, workerUrl } = this.deps;
    if (typeof SharedWorker !== "function" || !workerUrl) return false;
    let worker;
    try {
      worker = new SharedWorker(workerUrl, { type: "module", name: this.client.scope() });
    } catch {
      return false; // e.g. the static files live on another origin
    }
    this.port = worker.port;
    // Fails to load (another origin, no module workers): elect a leader tab instead.
    worker.onerror = () => this.client.fallBack();
    this.port.onmessage = (e) => this.client.receive(e.data);
    this.port.start();
    this.join();
    return true;
  }

  join() {
    this.port.postMessage({ kind: KIND.JOIN, cursor: this.client.cursor, config: ownerConfig(this.client.config) });
  }

  close() {
    if (this.port) this.port.close();
    this.port = null;
  }

  pagehide() {
    if (this.port) this.port.postMessage({ kind: KIND.LEAVE });
  }

  pageshow(persisted) {
    if (persisted && this.port) this.join(); // back from the bfcache
  }

  online() {} // the worker listens for "online" itself
}

/** The SharedWorker's side: one owner for every tab that joins; the last tab to leave stops it. */
export function serveSharedWorker(scope, deps) {
  let ports = [];
  let owner = null;
  const post = (message, target) => {
    for (const port of target ? [target] : ports.slice()) port.postMessage(message);
  };
  scope.addEventListener("online", () => {
    if (owner && owner.waiting) owner.reconnectNow();
  });
  scope.onconnect = (event) => {
    const port = event.ports[0];
    port.onmessage = (e) => {
      const m = e.data || {};
      if (m.kind === KIND.JOIN) {
        if (typeof deps.EventSource !== "function") {
          port.postMessage({ kind: KIND.UNSUPPORTED });
          return;
        }
        if (!ports.includes(port)) ports.push(port);
        if (!owner) owner = new StreamOwner(m.config, post, deps);
        owner.join(port, toId(m.cursor));
      } else if (m.kind === KIND.LEAVE) {
        ports = ports.filter((p) => p !== port);
        if (!ports.length && owner) {
          owner.stop(); // the last tab went: nobody to stream for
          owner = null;
        }
      }
    };
    port.start();
  };
}

export class LeaderTransport {
  constructor(client, deps) {
    this.client = client;
    this.deps = deps;
    this.owner = null;
  }

  get role() {
    return this.election && this.election.leading ? "leader" : "follower";
  }

  start() {
    if (typeof this.deps.BroadcastChannel !== "function") return false;
    const channel = (this.channel = new this.deps.BroadcastChannel(this.client.scope()));
    const tabId = newTabId(this.deps.now(), this.deps.random);
    this.election = new Election(tabId, (m) => channel.postMessage(m), this, this.deps);
    channel.onmessage = (e) => this.onChannel(e.data || {});
    this.election.start();
    return true;
  }

  // Election callbacks.
  lead() {
    const tabId = this.election.tabId;
    this.owner = new StreamOwner(
      ownerConfig(this.client.config),
      (message, target) => {
        if (target === null || target === tabId) this.client.receive(message);
        if (target !== tabId) this.channel.postMessage({ t: CHANNEL.MESSAGE, to: target, msg: message });
      },
      this.deps,
    );
    this.owner.join(tabId, this.client.cursor);
  }

  stepDown() {
    if (this.owner) this.owner.stop();
    this.owner = null;
  }

  follow(leaderId, changed) {
    // A new leader's owner knows nothing of this tab: tell it how far this tab got.
    if (changed) this.channel.postMessage({ t: CHANNEL.JOIN, from: this.election.tabId, cursor: this.client.cursor });
  }

  onChannel(m) {
    if (this.election.onMessage(m)) return;
    const leading = this.election.leading;
    if (m.t === CHANNEL.MESSAGE) {
      if (!leading && (m.to === null || m.to === this.election.tabId)) this.client.receive(m.msg);
    } else if (m.t === CHANNEL.JOIN) {
      if (leading && this.owner) this.owner.join(m.from, toId(m.cursor));
    }
  }

  pagehide() {
    this.election.resign();
  }

  pageshow(persisted) {
    if (persisted) this.election.rejoin();
  }

  online() {
    if (this.owner && this.owner.waiting) this.owner.reconnectNow();
  }
}
