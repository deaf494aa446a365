/* The protocol: the stream's event names, the constants shared with the server, the parsing of
 * event payloads, the messages between a stream owner and its tabs, and the link rule.
 *
 * No DOM, no globals: imported by the page, the SharedWorker and the node tests alike.
 * tests/test_js_parity.py checks the server-side constants against this module.
 */

/** Event types on GET /notifications/stream/ (SPEC §6, §7). */
export const EVENTS = Object.freeze({
  NOTIFICATION: "notification",
  READ: "read",
  ARCHIVE: "archive",
  HELLO: "hello",
  RESET: "reset",
  UPDATE: "update", // SPEC §14: the notice's full JSON as it now is (no `read`: the card keeps its own)
  RETRACT: "retract", // {id}: the notice was withdrawn
});

/** Notification levels (the model's Level choices); anything else renders as "info". */
export const LEVELS = Object.freeze(["info", "success", "warning", "error"]);
/** The JSON API's largest page (views.API_MAX_LIMIT). */
export const LIST_LIMIT = 100;
/** Where the template tags route things by default (templatetags STREAM_URL, the API's URL). */
export const DEFAULT_STREAM_URL = "/notifications/stream/";
export const DEFAULT_API_URL = "/notifications/api/";
/** The template tags' `transport=` choices. */
export const TRANSPORTS = Object.freeze(["auto", "shared-worker", "leader", "direct"]);

export const BACKOFF_BASE_MS = 1000; // first retry after a non-200 answer: 0.5–1 s
export const BACKOFF_MAX_MS = 30000; // doubling up to 30 s (15–30 s with jitter)
export const BUFFER_SIZE = 200; // recent notifications an owner keeps to catch up tabs that join
export const HEARTBEAT_MS = 1000; // leader election: the leader says so this often
export const LEASE_MS = 3000; // ... and is presumed gone after this long without a word
export const CLAIM_WAIT_MS = 250; // a candidate leads if nobody objects within this

/** Messages from a stream owner to its tabs (`kind`), and from tabs to a SharedWorker. */
export const KIND = Object.freeze({
  STATE: "state", // {state, user, cursor}
  NOTIFICATION: "notification", // {data}
  READ: "read", // {data: {ids, read, unread_count}}
  ARCHIVE: "archive", // {data: {ids, archived, unread_count}}
  LIST: "list", // {results, unread_count, replace, through}
  GAP: "gap", // {after}: the tab loads what it missed from the API itself
  UPDATE: "update", // {data}: a notice as it now is (SPEC §14)
  RETRACT: "retract", // {data: {id}}
  UNSUPPORTED: "unsupported", // the worker cannot stream (no EventSource in workers)
  JOIN: "join", // tab → worker: {cursor, config}
  LEAVE: "leave", // tab → worker
});

/** Messages between tabs on the BroadcastChannel (`t`). */
export const CHANNEL = Object.freeze({
  HEARTBEAT: "hb", // {from}: the leader, every HEARTBEAT_MS and in answer to claims and pings
  CLAIM: "claim", // {from}: a candidate
  PING: "ping", // {from}: who leads? (a leader answers with a heartbeat)
  RESIGN: "resign", // {from}: the leader goes (pagehide)
  JOIN: "join", // {from, cursor}: a follower tells the leader how far it got
  MESSAGE: "msg", // {to, msg}: the leader relays an owner message to one tab (to) or all (null)
});

/** A non-negative integer id, or null. */
export function toId(value) {
  if (typeof value === "number") return Number.isInteger(value) && value >= 0 ? value : null;
  if (typeof value !== "string" || !/^\d+$/.test(value.trim())) return null;
  const n = Number(value.trim());
  return Number.isSafeInteger(n) ? n : null;
}

/** The larger of two ids, either of which may be null or undefined. */
export function maxId(a, b) {
  if (a === null || a === undefined) return b === undefined ? null : b;
  if (b === null || b === undefined) return a;
  return Math.max(a, b);
}

/** Equal jitter: between half and all of min(30 s, 1 s × 2ⁿ). */
export function backoffDelay(failures, random = Math.random) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** failures);
  return ceiling / 2 + random() * (ceiling / 2);
}

function json(text) {
  try {
    const value = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/** `event: notification` data → the notification, or null if it is not one. */
export function parseNotification(text) {
  const n = json(text);
  return n && toId(n.id) !== null && typeof n.title === "string" ? n : null;
}

/** `event: retract` data → {id}, or null. */
export function parseRetract(text) {
  const data = json(text);
  const id = data ? toId(data.id) : null;
  return id === null ? null : { id };
}

/** A notice's `progress` as a bar shows it: an integer 0–100, or null for none. */
export function progressOf(n) {
  const p = n ? n.progress : null;
  return Number.isInteger(p) && p >= 0 && p <= 100 ? p : null;
}

/** `event: hello` data → {user, cursor}; user is null for an anonymous stream. */
export function parseHello(text) {
  const data = json(text);
  if (!data) return null;
  return { user: typeof data.user === "string" ? data.user : null, cursor: toId(data.cursor) };
}

function idList(value) {
  return Array.isArray(value) ? value.map(toId).filter((id) => id !== null) : null;
}

/** `event: read` data → {ids: [..] | "all", read, unread_count}; read is false for "mark unread". */
export function parseRead(text) {
  const data = json(text);
  if (!data) return null;
  const ids = data.ids === "all" ? "all" : idList(data.ids);
  if (ids === null) return null;
  return { ids, read: data.read !== false, unread_count: typeof data.unread_count === "number" ? data.unread_count : undefined };
}

/** `event: archive` data → {ids: [..], archived, unread_count} (SPEC §13). */
export function parseArchive(text) {
  const data = json(text);
  const ids = data ? idList(data.ids) : null;
  if (ids === null || typeof data.archived !== "boolean") return null;
  return { ids, archived: data.archived, unread_count: typeof data.unread_count === "number" ? data.unread_count : undefined };
}

/** Milliseconds from `now` until an `expires_at` (ISO 8601) passes; null for none or unreadable. */
export function msUntil(expiresAt, now) {
  if (typeof expiresAt !== "string" || expiresAt === "") return null;
  const when = Date.parse(expiresAt);
  return Number.isNaN(when) ? null : Math.max(0, when - now);
}

/** `event: reset` data → {reason, cursor}. */
export function parseReset(text) {
  const data = json(text) || {};
  return { reason: typeof data.reason === "string" ? data.reason : "", cursor: toId(data.cursor) };
}

// The link rule (issue 12), the same as the server's: a URL is safe iff it has no ASCII control
// character and no backslash, no leading or trailing space, and is either http(s):// with a
// non-empty host or a path starting with one "/" (a browser resolves "//x", "/\x", "/<TAB>/x" to
// another site).
const CONTROL_OR_BACKSLASH = /[\u0000-\u001f\u007f\\]/;
// A leading or trailing ASCII space, as in notifications/links.py.
const EDGE_SPACE = /^ | $/; // the other characters URL parsers trim are controls, refused above
const ABSOLUTE = /^https?:\/\/([^/?#]*)/i;

/** The URL if the client may render it as a link, else null. */
export function safeUrl(url) {
  if (typeof url !== "string" || url === "") return null;
  if (CONTROL_OR_BACKSLASH.test(url)) return null;
  if (EDGE_SPACE.test(url)) return null;
  const absolute = ABSOLUTE.exec(url);
  if (absolute) {
    const host = absolute[1].slice(absolute[1].lastIndexOf("@") + 1).replace(/:\d*$/, "");
    return host ? url : null;
  }
  return url[0] === "/" && url[1] !== "/" ? url : null;
}
