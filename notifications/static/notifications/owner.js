/* The stream owner: the one EventSource of a browser, in the SharedWorker, the leader tab, or
 * each tab (direct). It keeps the cursor and the last BUFFER_SIZE notifications, reconnects
 * with backoff after a non-200 answer, and decides for each tab that joins whether it can be
 * caught up from the buffer or must fetch the gap from the JSON API.
 *
 * Every outside dependency (EventSource, timers, fetch, random, the base URL) is injected.
 */
import {
  BUFFER_SIZE,
  EVENTS,
  KIND,
  LIST_LIMIT,
  backoffDelay,
  maxId,
  parseHello,
  parseNotification,
  parseArchive,
  parseRead,
  parseReset,
  parseRetract,
  toId,
} from "./protocol.js";

/** What a tab that saw everything up to `tabCursor` (null: nothing) needs from this owner.
 *  → {kind: "none"} | {kind: "replay", items} | {kind: "gap", after} */
export function catchUpPlan(owner, tabCursor) {
  const from = tabCursor === null || tabCursor === undefined ? 0 : tabCursor;
  if (owner.cursor === null || from >= owner.cursor) return { kind: "none" };
  if (owner.bufferFrom !== null && from >= owner.bufferFrom) {
    return { kind: "replay", items: owner.buffer.filter((n) => n.id > from) };
  }
  return { kind: "gap", after: from };
}

/** GET the JSON API (newest first) → a promise of the body, or of null after 3 tries. */
export async function loadList(apiUrl, after, deps) {
  const url = new URL(apiUrl, deps.baseUrl);
  url.searchParams.set("limit", String(LIST_LIMIT));
  if (after !== null && after !== undefined) url.searchParams.set("after", String(after));
  for (let attempt = 1; attempt <= 3; attempt += 1) {
    try {
      const r = await deps.fetch(url.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      return await r.json();
    } catch {
      if (attempt < 3) await new Promise((done) => deps.setTimeout(done, backoffDelay(attempt, deps.random)));
    }
  }
  return null;
}

const CLOSED = 2; // EventSource.CLOSED

export class StreamOwner {
  /** config: {streamUrl, apiUrl, user}; post(message, target) sends to one tab or (null) all;
   *  deps: {EventSource, setTimeout, clearTimeout, fetch, random, baseUrl}. */
  constructor(config, post, deps) {
    this.config = config;
    this.post = post;
    this.deps = deps;
    this.es = null;
    this.timer = null;
    this.failures = 0;
    this.cursor = null; // everything up to this id has been received
    this.user = undefined; // from the last hello
    this.state = "connecting";
    this.buffer = []; // recent notifications, ascending ids; never mutated once posted
    this.bufferFrom = null; // the buffer holds every notification with id > bufferFrom
    this.pending = []; // tabs that joined before the first hello: [target, cursor]
    this.helloSeen = false;
    this.resync = false; // a connection was lost: read marks may have been missed
    this.stopped = false;
  }

  get waiting() {
    return this.timer !== null; // between a refused connection and the next attempt
  }

  start(cursor) {
    if (this.es || this.timer) return;
    this.cursor = cursor;
    this.bufferFrom = cursor; // a stream opened at N replays everything after N
    this.open();
  }

  open() {
    this.timer = null;
    if (this.stopped) return;
    const url = new URL(this.config.streamUrl, this.deps.baseUrl);
    // A new EventSource never sends Last-Event-ID: the query parameter carries the cursor.
    if (this.cursor !== null) url.searchParams.set("last_event_id", String(this.cursor));
    const es = (this.es = new this.deps.EventSource(url.toString()));
    const mine = (handler) => (e) => {
      if (es === this.es) handler.call(this, e);
    };
    es.addEventListener(EVENTS.HELLO, mine(this.onHello));
    es.addEventListener(EVENTS.NOTIFICATION, mine(this.onNotification));
    es.addEventListener(EVENTS.READ, mine(this.onRead));
    es.addEventListener(EVENTS.ARCHIVE, mine(this.onArchive));
    es.addEventListener(EVENTS.RESET, mine(this.onReset));
    es.addEventListener(EVENTS.UPDATE, mine(this.onUpdate));
    es.addEventListener(EVENTS.RETRACT, mine(this.onRetract));
    es.onerror = mine(() => {
      this.resync = true;
      this.setState("reconnecting");
      // A non-200 answer (a proxy's 502/503, a 429, a 403) closes an EventSource for good;
      // network errors and clean ends leave it CONNECTING and the browser retries itself.
      if (es.readyState === CLOSED) this.retryLater();
    });
  }

  retryLater() {
    if (this.es) this.es.close();
    this.es = null;
    if (this.stopped || this.timer) return;
    const delay = backoffDelay(this.failures, this.deps.random);
    this.failures += 1;
    this.timer = this.deps.setTimeout(() => this.open(), delay);
  }

  /** Reconnect at once (the network is back, or a fresh page proves the session is). */
  reconnectNow() {
    if (this.stopped) return;
    this.resync = true;
    this.close();
    this.open();
  }

  stop() {
    this.stopped = true;
    this.close();
  }

  close() {
    if (this.timer) this.deps.clearTimeout(this.timer);
    this.timer = null;
    if (this.es) this.es.close();
    this.es = null;
  }

  advance(lastEventId) {
    const id = toId(lastEventId);
    if (id !== null) this.cursor = maxId(this.cursor, id);
  }

  setState(state) {
    this.state = state;
    this.post(this.stateMessage(), null);
  }

  stateMessage() {
    return { kind: KIND.STATE, state: this.state, user: this.user, cursor: this.cursor };
  }

  onHello(e) {
    const hello = parseHello(e.data);
    if (!hello) return;
    this.advance(e.lastEventId);
    if (this.bufferFrom === null) this.bufferFrom = this.cursor; // opened without a cursor
    this.failures = 0;
    this.user = hello.user;
    this.setState("connected");
    const pending = this.pending;
    this.pending = [];
    for (const [target, cursor] of pending) this.catchUp(target, cursor);
    if (this.helloSeen && this.resync && this.user) this.refresh();
    this.helloSeen = true;
    this.resync = false;
  }

  onNotification(e) {
    const n = parseNotification(e.data);
    this.advance(e.lastEventId);
    if (!n) return;
    const last = this.buffer.length ? this.buffer[this.buffer.length - 1].id : null;
    if (last !== null && n.id <= last) return; // already relayed (ids only grow)
    this.buffer.push(n);
    if (this.buffer.length > BUFFER_SIZE) this.bufferFrom = maxId(this.bufferFrom, this.buffer.shift().id);
    this.post({ kind: KIND.NOTIFICATION, data: n }, null);
  }

  /** A notice changed (SPEC §14): the buffered copy takes its latest state (its read state kept). */
  onUpdate(e) {
    const n = parseNotification(e.data);
    this.advance(e.lastEventId);
    if (!n) return;
    this.buffer = this.buffer.map((old) => (old.id === n.id ? { ...n, read: old.read } : old));
    this.coverChange(e.lastEventId);
    this.post({ kind: KIND.UPDATE, data: n }, null);
  }

  onRetract(e) {
    const data = parseRetract(e.data);
    this.advance(e.lastEventId);
    if (!data) return;
    this.buffer = this.buffer.filter((n) => n.id !== data.id);
    this.coverChange(e.lastEventId);
    this.post({ kind: KIND.RETRACT, data }, null);
  }

  /** The buffer replays notices by their own ids, not their changes: a tab that joins behind a
   *  change loads its list from the API instead of missing it. */
  coverChange(eventId) {
    const id = toId(eventId);
    if (id !== null && this.bufferFrom !== null) this.bufferFrom = Math.max(this.bufferFrom, id);
  }

  onRead(e) {
    const data = parseRead(e.data);
    if (!data) return;
    const all = data.ids === "all";
    const ids = new Set(all ? [] : data.ids);
    // Copies, never in place: the objects already went out as DOM event details.
    const read = data.read;
    this.buffer = this.buffer.map((n) => ((all || ids.has(n.id)) && n.read !== read ? { ...n, read } : n));
    this.post({ kind: KIND.READ, data }, null);
  }

  onArchive(e) {
    const data = parseArchive(e.data);
    if (!data) return;
    // An archived notice is not relayed to tabs that join later; an unarchived one comes from the list.
    if (data.archived) {
      const ids = new Set(data.ids);
      this.buffer = this.buffer.filter((n) => !ids.has(n.id));
    }
    this.post({ kind: KIND.ARCHIVE, data }, null);
  }

  onReset(e) {
    const data = parseReset(e.data);
    this.advance(e.lastEventId);
    this.cursor = maxId(this.cursor, data.cursor);
    this.buffer = [];
    this.bufferFrom = this.cursor;
    const through = this.cursor;
    loadList(this.config.apiUrl, null, this.deps).then((body) => {
      if (body) this.post({ kind: KIND.LIST, results: body.results, unread_count: body.unread_count, replace: true, through }, null);
    });
  }

  /** After a reconnect: read marks made meanwhile came as events nobody received. */
  refresh() {
    loadList(this.config.apiUrl, null, this.deps).then((body) => {
      if (body) this.post({ kind: KIND.LIST, results: body.results, unread_count: body.unread_count, replace: false }, null);
    });
  }

  /** A tab (re)joins, having seen everything up to `cursor` (null: nothing yet). */
  join(target, cursor) {
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
  }

  catchUp(target, cursor) {
    const plan = catchUpPlan(this, cursor);
    if (plan.kind === "replay") for (const n of plan.items) this.post({ kind: KIND.NOTIFICATION, data: n }, target);
    else if (plan.kind === "gap") this.post({ kind: KIND.GAP, after: plan.after }, target);
  }
}
