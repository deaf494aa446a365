// Test doubles for the client's injected dependencies: a clock with timers, EventSource,
// BroadcastChannel and fetch. Only what the modules use.

export class FakeClock {
  constructor(start = 1_700_000_000_000) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
  }

  now = () => this.time;

  setTimeout = (fn, ms) => {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, fn, every: null });
    return id;
  };

  setInterval = (fn, ms) => {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, fn, every: ms });
    return id;
  };

  clearTimeout = (id) => this.timers.delete(id);
  clearInterval = (id) => this.timers.delete(id);

  /** Run every timer due within `ms`, in time order (bounded: at most 10,000 firings). */
  advance(ms) {
    const end = this.time + ms;
    for (let i = 0; i < 10_000; i++) {
      let next = null;
      for (const [id, t] of this.timers) if (t.at <= end && (next === null || t.at < next[1].at)) next = [id, t];
      if (next === null) break;
      const [id, t] = next;
      this.time = t.at;
      if (t.every === null) this.timers.delete(id);
      else t.at += t.every;
      t.fn();
    }
    this.time = end;
  }
}

export class FakeEventSource {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = {};
    this.closed = false;
    FakeEventSource.instances.push(this);
  }

  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }

  close() {
    this.closed = true;
    this.readyState = 2;
  }

  /** The server sends `event: type`, `data: JSON`, `id: lastEventId`. */
  emit(type, data, lastEventId = "") {
    const e = { type, data: typeof data === "string" ? data : JSON.stringify(data), lastEventId: String(lastEventId) };
    for (const fn of this.listeners[type] || []) fn(e);
  }

  fail(readyState = 2) {
    this.readyState = readyState;
    this.onerror?.({});
  }
}

/** Tabs' BroadcastChannels on one bus: a message reaches every other channel, synchronously. */
export class Bus {
  constructor() {
    this.channels = [];
  }

  channel() {
    const bus = this;
    const ch = {
      onmessage: null,
      postMessage(m) {
        for (const other of bus.channels) if (other !== ch && other.onmessage) other.onmessage({ data: structuredClone(m) });
      },
    };
    this.channels.push(ch);
    return ch;
  }
}

export function jsonResponse(body, status = 200) {
  return { ok: status >= 200 && status < 300, status, json: async () => body };
}

export function ownerDeps(clock, extra = {}) {
  return {
    EventSource: FakeEventSource,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    baseUrl: "http://127.0.0.1/",
    fetch: async () => jsonResponse({ results: [], unread_count: 0 }),
    ...extra,
  };
}
