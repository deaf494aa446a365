/* The client: the public API (window.DjangoNotifications) and the DOM events of a page.
 *
 * It receives the stream owner's messages through a transport, drops duplicates by id, refuses
 * another user's stream (state "session-changed") and turns the rest into DOM events:
 *   notifications:notification  detail = the notification (each id once)
 *   notifications:read          detail = {ids: [..] | "all", read, unread_count} (read false: unread again)
 *   notifications:archive       detail = {ids: [..], archived, unread_count}
 *   notifications:list          detail = {results, unread_count, replace, through}
 *   notifications:state         detail = {state, user}; connecting, connected, reconnecting,
 *                               signed-out or session-changed
 * deps: {emit(name, detail), fetch, cookie(), ...the transports' deps}.
 */
import { DEFAULT_API_URL, DEFAULT_STREAM_URL, KIND, maxId, toId } from "./protocol.js";
import { loadList } from "./owner.js";
import { DirectTransport, LeaderTransport, WorkerTransport } from "./transport.js";

/** The client's configuration from its script tag's data- attributes. */
export function readConfig(dataset, baseUrl) {
  const d = dataset || {};
  return {
    streamUrl: new URL(d.streamUrl || DEFAULT_STREAM_URL, baseUrl).toString(),
    apiUrl: new URL(d.apiUrl || DEFAULT_API_URL, baseUrl).toString(),
    readUrl: d.readUrl || "", // with {id} in place of the notification's id
    readAllUrl: d.readAllUrl || "",
    unreadUrl: d.unreadUrl || "", // these three with {id}, as readUrl
    archiveUrl: d.archiveUrl || "",
    unarchiveUrl: d.unarchiveUrl || "",
    csrfToken: d.csrfToken || "",
    user: d.user || "",
    lastEventId: toId(d.lastEventId),
    transport: d.transport || "auto", // auto | shared-worker | leader | direct
  };
}

/** Merge a list from the JSON API into what a page has seen (ids) → {seen, cursor, through}.
 *  replace (after a reset) forgets the ids up to `through` that are not in the list. */
export function mergeList(seen, cursor, m) {
  const through = maxId(m.through, m.results.length ? m.results[0].id : null);
  const next = m.replace ? new Set([...seen].filter((id) => through === null || id > through)) : new Set(seen);
  for (const n of m.results) {
    next.add(n.id);
    cursor = maxId(cursor, n.id);
  }
  return { seen: next, cursor, through };
}

/** A page rendered for one user must not show another's stream (or a signed-out one). */
export function displayState(m, pageUser) {
  if (m.state !== "connected") return m.state;
  if ((m.user || "") === pageUser) return "connected";
  return m.user === null ? "signed-out" : "session-changed";
}

export class Client {
  constructor(config, deps) {
    this.config = config;
    this.deps = deps;
    this.cursor = config.lastEventId;
    this.seen = new Set();
    this.state = "connecting";
    this.user = undefined;
    this.unread = null;
    this.channel = null; // the transport in use
  }

  /** "shared-worker", "leader", "follower" or "direct" (null before start). */
  get transport() {
    return this.channel ? this.channel.role : null;
  }

  emit(name, detail) {
    this.deps.emit(name, detail);
  }

  markSeen(ids) {
    for (const id of ids) if (id !== null) this.seen.add(id);
  }

  foreign() {
    return this.state === "session-changed";
  }

  receive(m) {
    if (m.kind === KIND.STATE) {
      this.cursor = maxId(this.cursor, m.cursor);
      this.user = m.user;
      const state = displayState(m, this.config.user);
      if (state !== this.state) {
        this.state = state;
        this.emit("state", { state, user: m.user });
      }
    } else if (m.kind === KIND.NOTIFICATION) {
      const n = m.data;
      this.cursor = maxId(this.cursor, n.id);
      if (this.seen.has(n.id) || this.foreign()) return;
      this.seen.add(n.id);
      if (n.read === false && this.unread !== null) this.unread += 1;
      this.emit("notification", n);
    } else if (m.kind === KIND.UPDATE) {
      if (this.foreign()) return;
      this.emit("update", m.data); // the page updates the card if it shows it (SPEC §14)
    } else if (m.kind === KIND.RETRACT) {
      if (this.foreign()) return;
      this.emit("retract", m.data);
    } else if (m.kind === KIND.READ) {
      if (this.foreign()) return;
      if (typeof m.data.unread_count === "number") this.unread = m.data.unread_count;
      this.emit("read", m.data);
    } else if (m.kind === KIND.ARCHIVE) {
      if (this.foreign()) return;
      if (typeof m.data.unread_count === "number") this.unread = m.data.unread_count;
      this.emit("archive", m.data);
    } else if (m.kind === KIND.LIST) {
      if (this.foreign()) return;
      this.applyList(m);
    } else if (m.kind === KIND.GAP) {
      if (this.foreign()) return; // another user's list must not reach this page
      loadList(this.config.apiUrl, m.after, this.deps).then((body) => {
        // Through the LIST path, so the session is checked again when the answer comes.
        if (body) this.receive({ kind: KIND.LIST, results: body.results, unread_count: body.unread_count, replace: false });
      });
    } else if (m.kind === KIND.UNSUPPORTED) {
      this.fallBack();
    }
  }

  applyList(m) {
    const merged = mergeList(this.seen, this.cursor, m);
    this.seen = merged.seen;
    this.cursor = merged.cursor;
    if (typeof m.unread_count === "number") this.unread = m.unread_count;
    this.emit("list", { results: m.results, unread_count: m.unread_count, replace: !!m.replace, through: merged.through });
  }

  /** Every tab of one user, on one stream URL, shares a worker (or a channel). */
  scope() {
    return `django-notifications:${this.config.streamUrl}:${this.config.user}`;
  }

  start() {
    const t = this.config.transport;
    const tries = [];
    if (t === "auto" || t === "shared-worker") tries.push(WorkerTransport);
    if (t !== "direct") tries.push(LeaderTransport);
    tries.push(DirectTransport);
    for (const Transport of tries) {
      const channel = new Transport(this, this.deps);
      if (channel.start()) {
        this.channel = channel;
        return;
      }
    }
  }

  /** The worker failed to load or cannot stream: elect a leader tab instead (or go direct). */
  fallBack() {
    if (!(this.channel instanceof WorkerTransport)) return;
    this.channel.close();
    for (const Transport of [LeaderTransport, DirectTransport]) {
      const channel = new Transport(this, this.deps);
      if (channel.start()) {
        this.channel = channel;
        return;
      }
    }
  }

  pagehide() {
    if (this.channel) this.channel.pagehide();
  }

  pageshow(persisted) {
    if (this.channel) this.channel.pageshow(persisted);
  }

  online() {
    if (this.channel) this.channel.online();
  }

  // Marking read: a POST with Django's CSRF token; every tab then learns it from `read`.

  csrfToken() {
    const match = (this.deps.cookie() || "").match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : this.config.csrfToken;
  }

  async post(url) {
    const r = await this.deps.fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": this.csrfToken(), Accept: "application/json" },
    });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    // Apply it here at once; the stream's `read` / `archive` event will confirm it in every tab.
    if (typeof body.archived === "boolean") {
      this.receive({ kind: KIND.ARCHIVE, data: { ids: [body.id], archived: body.archived, unread_count: body.unread_count } });
    } else {
      const ids = body.read === "all" ? "all" : [body.id];
      this.receive({ kind: KIND.READ, data: { ids, read: body.read !== false, unread_count: body.unread_count } });
    }
    return body;
  }

  withId(url, id) {
    return url.replace("{id}", encodeURIComponent(String(id)));
  }

  /** POST /notifications/api/<id>/unread/: unread again (SPEC §13). */
  markUnread(id) {
    return this.post(this.withId(this.config.unreadUrl, id));
  }

  /** POST /notifications/api/<id>/archive/ (archived true) or .../unarchive/. */
  archive(id, archived = true) {
    return this.post(this.withId(archived ? this.config.archiveUrl : this.config.unarchiveUrl, id));
  }

  /** POST /notifications/api/<id>/read/; resolves with the API's JSON. */
  markRead(id) {
    return this.post(this.config.readUrl.replace("{id}", encodeURIComponent(String(id))));
  }

  /** POST /notifications/api/read-all/; resolves with the API's JSON. */
  markAllRead() {
    return this.post(this.config.readAllUrl);
  }
}
