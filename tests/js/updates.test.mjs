// Notices that change (SPEC §14): parsing, the owner's buffer and catch-up, the client's dispatch.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { Client, readConfig } from "../../notifications/static/notifications/client.js";
import { StreamOwner } from "../../notifications/static/notifications/owner.js";
import { KIND, parseRetract, progressOf } from "../../notifications/static/notifications/protocol.js";
import { FakeClock, FakeEventSource, jsonResponse, ownerDeps } from "./fakes.mjs";

const config = { streamUrl: "/notifications/stream/", apiUrl: "/notifications/api/", user: "alice" };
const note = (id, extra = {}) => ({ id, title: `n${id}`, body: "", level: "info", url: "", read: false, ...extra });

beforeEach(() => {
  FakeEventSource.instances = [];
});

function owner() {
  const sent = [];
  const o = new StreamOwner(config, (message, target) => sent.push({ message, target }), ownerDeps(new FakeClock()));
  o.join(null, 0);
  const es = FakeEventSource.instances[0];
  es.emit("hello", { user: "alice", cursor: 0 }, 0);
  return { o, sent, es };
}

test("retract and progress parse strictly", () => {
  assert.deepEqual(parseRetract('{"id": 4}'), { id: 4 });
  assert.equal(parseRetract('{"id": "x"}'), null);
  assert.equal(parseRetract("nope"), null);
  assert.equal(progressOf({ progress: 45 }), 45);
  for (const p of [null, undefined, -1, 101, 4.5, "50"]) assert.equal(progressOf({ progress: p }), null);
});

test("the owner relays updates and retractions, keeps the buffered copy's read state, moves the cursor", () => {
  const { o, sent, es } = owner();
  es.emit("notification", note(1), 1);
  es.emit("read", { ids: [1], unread_count: 0 });
  es.emit("update", note(1, { title: "n1 v2", progress: 50, read: undefined }), 2);
  assert.equal(o.cursor, 2);
  assert.deepEqual(o.buffer.map((n) => [n.title, n.progress, n.read]), [["n1 v2", 50, true]]);
  es.emit("retract", { id: 1 }, 3);
  assert.deepEqual(o.buffer, []);
  assert.equal(o.cursor, 3);
  const kinds = sent.filter((s) => s.target === null).map((s) => s.message.kind);
  assert.deepEqual(kinds.slice(-3), [KIND.READ, KIND.UPDATE, KIND.RETRACT]);
  assert.deepEqual(sent.at(-1).message.data, { id: 1 });
});

test("a tab joining behind a change is sent to the API, not replayed a stale buffer", () => {
  const { o, sent, es } = owner();
  es.emit("notification", note(1), 1);
  es.emit("notification", note(2), 2);
  es.emit("update", note(1, { progress: 10 }), 3);
  assert.equal(o.bufferFrom, 3);
  o.join("late", 1);
  const late = sent.filter((s) => s.target === "late" && s.message.kind !== KIND.STATE).map((s) => s.message);
  assert.deepEqual(late, [{ kind: KIND.GAP, after: 1 }]);
  o.join("current", 3);
  assert.equal(sent.filter((s) => s.target === "current" && s.message.kind !== KIND.STATE).length, 0);
});

test("the buffer's lower bound never falls back below a change when it overflows", () => {
  const { o, es } = owner();
  es.emit("notification", note(1), 1);
  es.emit("update", note(1, { progress: 1 }), 500);
  for (let id = 501; id <= 720; id++) es.emit("notification", note(id), id);
  assert.ok(o.bufferFrom >= 500);
});

test("the client dispatches updates and retractions, not for another session's stream", () => {
  const events = [];
  const c = new Client(readConfig({ user: "alice", lastEventId: "0" }, "http://127.0.0.1/"), {
    emit: (name, detail) => events.push([name, detail]),
    cookie: () => "",
    baseUrl: "http://127.0.0.1/",
    setTimeout: (fn) => fn(),
    random: () => 0.5,
    fetch: async () => jsonResponse({ results: [], unread_count: 0 }),
  });
  c.receive({ kind: KIND.STATE, state: "connected", user: "alice", cursor: 0 });
  c.receive({ kind: KIND.UPDATE, data: note(1, { progress: 3 }) });
  c.receive({ kind: KIND.RETRACT, data: { id: 1 } });
  assert.deepEqual(events.filter(([n]) => n !== "state").map(([n, d]) => [n, d.id]), [["update", 1], ["retract", 1]]);
  c.receive({ kind: KIND.STATE, state: "connected", user: "mallory", cursor: 0 });
  c.receive({ kind: KIND.UPDATE, data: note(2) });
  assert.equal(events.filter(([n]) => n === "update").length, 1);
});
