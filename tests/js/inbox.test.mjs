// The inbox in the client (SPEC §13): unread again and archive events, from the stream owner to the
// page's DOM events, the API calls a page makes, and the expiry arithmetic the page's timers use.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { Client, readConfig } from "../../notifications/static/notifications/client.js";
import { StreamOwner } from "../../notifications/static/notifications/owner.js";
import { EVENTS, KIND, msUntil, parseArchive, parseRead } from "../../notifications/static/notifications/protocol.js";
import { FakeClock, FakeEventSource, jsonResponse, ownerDeps } from "./fakes.mjs";

const config = { streamUrl: "/notifications/stream/", apiUrl: "/notifications/api/", user: "alice" };
const note = (id, extra = {}) => ({ id, title: `n${id}`, body: "", level: "info", url: "", read: false, ...extra });

beforeEach(() => {
  FakeEventSource.instances = [];
});

test("protocol: read carries read false for unread again; archive is parsed strictly", () => {
  assert.equal(EVENTS.ARCHIVE, "archive");
  assert.deepEqual(parseRead('{"ids": [3], "read": false, "unread_count": 1}'), { ids: [3], read: false, unread_count: 1 });
  assert.deepEqual(parseArchive('{"ids": [3, 4], "archived": true, "unread_count": 0}'),
    { ids: [3, 4], archived: true, unread_count: 0 });
  assert.deepEqual(parseArchive('{"ids": [3], "archived": false}'), { ids: [3], archived: false, unread_count: undefined });
  assert.equal(parseArchive('{"ids": [3]}'), null);
  assert.equal(parseArchive('{"ids": "all", "archived": true}'), null);
  assert.equal(parseArchive("nope"), null);
});

test("protocol: msUntil counts down to an ISO expiry, never below zero", () => {
  const now = Date.parse("2030-01-01T00:00:00Z");
  assert.equal(msUntil("2030-01-01T00:00:05Z", now), 5000);
  assert.equal(msUntil("2029-12-31T23:59:00Z", now), 0);
  assert.equal(msUntil("", now), null);
  assert.equal(msUntil(null, now), null);
  assert.equal(msUntil("not a date", now), null);
});

test("owner: relays archive and unread to every tab, and forgets archived ones for tabs that join later", () => {
  const sent = [];
  const o = new StreamOwner(config, (message, target) => sent.push({ message, target }), ownerDeps(new FakeClock()));
  o.start(null);
  const es = FakeEventSource.instances[0];
  es.emit("hello", { user: "alice", cursor: 5 }, 5);
  es.emit("notification", note(6), 6);
  es.emit("notification", note(7), 7);
  es.emit("read", { ids: [6], read: true, unread_count: 1 });
  es.emit("read", { ids: [6], read: false, unread_count: 2 });
  assert.equal(o.buffer.find((n) => n.id === 6).read, false);
  es.emit("archive", { ids: [7], archived: true, unread_count: 1 });
  assert.deepEqual(o.buffer.map((n) => n.id), [6]);
  const kinds = sent.map((s) => s.message.kind);
  assert.deepEqual(kinds.slice(-3), [KIND.READ, KIND.READ, KIND.ARCHIVE]);
  assert.deepEqual(sent.at(-1).message.data, { ids: [7], archived: true, unread_count: 1 });
  assert.equal(sent.at(-1).target, null);
});

function client(fetch) {
  const events = [];
  const fetched = [];
  const c = new Client(
    readConfig({
      user: "alice", lastEventId: "10", readUrl: "/api/{id}/read/", unreadUrl: "/api/{id}/unread/",
      archiveUrl: "/api/{id}/archive/", unarchiveUrl: "/api/{id}/unarchive/",
    }, "http://127.0.0.1/"),
    {
      emit: (name, detail) => events.push([name, detail]),
      cookie: () => "csrftoken=tok",
      baseUrl: "http://127.0.0.1/",
      setTimeout: (fn) => fn(),
      random: () => 0.5,
      fetch: async (url, init) => {
        fetched.push([url, init]);
        return fetch(url);
      },
    },
  );
  c.state = "connected";
  c.user = "alice";
  return { c, events, fetched };
}

test("client: mark unread and archive POST with the CSRF token and apply the answer at once", async () => {
  const { c, events, fetched } = client((url) =>
    url.includes("unread") ? jsonResponse({ id: 4, read: false, unread_count: 3 })
      : jsonResponse({ id: 4, archived: !url.includes("unarchive"), unread_count: 2 }),
  );
  await c.markUnread(4);
  await c.archive(4);
  await c.archive(4, false);
  assert.deepEqual(fetched.map(([url]) => url), ["/api/4/unread/", "/api/4/archive/", "/api/4/unarchive/"]);
  assert.equal(fetched[0][1].headers["X-CSRFToken"], "tok");
  assert.deepEqual(events, [
    ["read", { ids: [4], read: false, unread_count: 3 }],
    ["archive", { ids: [4], archived: true, unread_count: 2 }],
    ["archive", { ids: [4], archived: false, unread_count: 2 }],
  ]);
  assert.equal(c.unread, 2);
});

test("client: an archive message updates the count and becomes a DOM event; errors reject", async () => {
  const { c, events } = client(() => jsonResponse({ error: "No such notification." }, 404));
  c.receive({ kind: KIND.ARCHIVE, data: { ids: [9], archived: true, unread_count: 5 } });
  assert.equal(c.unread, 5);
  assert.deepEqual(events.at(-1), ["archive", { ids: [9], archived: true, unread_count: 5 }]);
  await assert.rejects(c.archive(9), /No such notification/);
});
