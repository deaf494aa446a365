// The client: list merging, dedupe, the session guard on every list path (bug a).
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, displayState, mergeList, readConfig } from "../../notifications/static/notifications/client.js";
import { KIND } from "../../notifications/static/notifications/protocol.js";
import { jsonResponse } from "./fakes.mjs";

const note = (id, extra = {}) => ({ id, title: `n${id}`, read: false, ...extra });

function client({ user = "alice", lastEventId = "10", fetch } = {}) {
  const events = [];
  const fetched = [];
  const c = new Client(readConfig({ user, lastEventId }, "http://127.0.0.1/"), {
    emit: (name, detail) => events.push([name, detail]),
    cookie: () => "",
    baseUrl: "http://127.0.0.1/",
    setTimeout: (fn) => fn(),
    random: () => 0.5,
    fetch: async (url) => {
      fetched.push(url);
      return fetch ? fetch(url) : jsonResponse({ results: [note(12), note(11)], unread_count: 2 });
    },
  });
  return { c, events, fetched };
}

const settle = () => new Promise((r) => setImmediate(r));

test("merge: a list adds its ids and moves the cursor", () => {
  const m = mergeList(new Set([1, 2]), 2, { results: [note(5), note(4)], replace: false });
  assert.deepEqual([...m.seen].sort(), [1, 2, 4, 5]);
  assert.equal(m.cursor, 5);
  assert.equal(m.through, 5);
});

test("merge: replace forgets ids up to `through` that the list lacks, keeps later live ones", () => {
  const m = mergeList(new Set([1, 2, 3, 9]), 9, { results: [note(3)], replace: true, through: 7 });
  assert.deepEqual([...m.seen].sort(), [3, 9]);
  assert.equal(m.through, 7);
  assert.equal(m.cursor, 9);
});

test("merge: through is the newest of `through` and the list; empty lists keep the cursor", () => {
  assert.equal(mergeList(new Set(), 3, { results: [note(8)], replace: true, through: 5 }).through, 8);
  const empty = mergeList(new Set([1]), 3, { results: [], replace: true, through: null });
  assert.deepEqual([...empty.seen], [1]); // nothing to replace through: kept
  assert.equal(empty.cursor, 3);
});

test("notifications are dispatched once per id, and the unread count follows", () => {
  const { c, events } = client();
  c.unread = 0;
  c.markSeen([10]);
  for (const id of [10, 11, 11]) c.receive({ kind: KIND.NOTIFICATION, data: note(id) });
  assert.deepEqual(events.map(([name, d]) => [name, d.id]), [["notification", 11]]);
  assert.equal(c.unread, 1);
  assert.equal(c.cursor, 11);
});

test("display state: signed out, session changed, or connected for the page's user", () => {
  assert.equal(displayState({ state: "connected", user: "alice" }, "alice"), "connected");
  assert.equal(displayState({ state: "connected", user: null }, "alice"), "signed-out");
  assert.equal(displayState({ state: "connected", user: "bob" }, "alice"), "session-changed");
  assert.equal(displayState({ state: "connected", user: null }, ""), "connected");
  assert.equal(displayState({ state: "reconnecting", user: "bob" }, "alice"), "reconnecting");
});

test("a gap is loaded from the API after the tab's cursor and merged as a list", async () => {
  const { c, events, fetched } = client();
  c.receive({ kind: KIND.STATE, state: "connected", user: "alice", cursor: 12 });
  c.receive({ kind: KIND.GAP, after: 10 });
  await settle();
  assert.equal(new URL(fetched[0]).searchParams.get("after"), "10");
  const lists = events.filter(([name]) => name === "list");
  assert.equal(lists.length, 1);
  assert.deepEqual(lists[0][1].results.map((n) => n.id), [12, 11]);
  assert.equal(lists[0][1].replace, false);
});

test("bug a: a gap on a page whose session changed does not merge the other user's list", async () => {
  const { c, events, fetched } = client();
  c.receive({ kind: KIND.STATE, state: "connected", user: "bob", cursor: 12 });
  assert.equal(c.state, "session-changed");
  c.receive({ kind: KIND.GAP, after: 10 });
  await settle();
  assert.deepEqual(events.filter(([name]) => name === "list"), []);
  assert.deepEqual(fetched, []); // not even fetched
});

test("bug a: a session that changes while the gap loads is checked again on the answer", async () => {
  let answer;
  const { c, events } = client({ fetch: () => new Promise((r) => (answer = r)) });
  c.receive({ kind: KIND.STATE, state: "connected", user: "alice", cursor: 12 });
  c.receive({ kind: KIND.GAP, after: 10 });
  await settle();
  c.receive({ kind: KIND.STATE, state: "connected", user: "bob", cursor: 12 });
  answer(jsonResponse({ results: [note(12)], unread_count: 1 }));
  await settle();
  await settle();
  assert.deepEqual(events.filter(([name]) => name === "list"), []);
});

test("list, read and notification messages are refused once the session changed", () => {
  const { c, events } = client();
  c.receive({ kind: KIND.STATE, state: "connected", user: "bob", cursor: 12 });
  c.receive({ kind: KIND.LIST, results: [note(12)], unread_count: 1, replace: false });
  c.receive({ kind: KIND.READ, data: { ids: "all", unread_count: 0 } });
  c.receive({ kind: KIND.NOTIFICATION, data: note(13) });
  assert.deepEqual(events.map(([name]) => name), ["state"]);
});

test("markRead posts with the CSRF cookie and applies the answer at once", async () => {
  const posted = [];
  const c = new Client(readConfig({ user: "alice", readUrl: "/api/{id}/read/" }, "http://127.0.0.1/"), {
    emit: () => {},
    cookie: () => "a=1; csrftoken=tok%3D",
    fetch: async (url, init) => {
      posted.push([url, init.headers["X-CSRFToken"]]);
      return jsonResponse({ id: 7, unread_count: 3 });
    },
  });
  const body = await c.markRead(7);
  assert.deepEqual(posted, [["/api/7/read/", "tok="]]);
  assert.equal(body.id, 7);
  assert.equal(c.unread, 3);
  const failing = new Client(readConfig({ user: "alice", readAllUrl: "/all/" }, "http://127.0.0.1/"), {
    emit: () => {},
    cookie: () => "",
    fetch: async () => jsonResponse({ error: "nope" }, 403),
  });
  await assert.rejects(failing.markAllRead(), /nope/);
});
