// The stream owner: catch-up from the buffer or a gap, cursor handling, the read copy (bug b).
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { BUFFER_SIZE, KIND } from "../../notifications/static/notifications/protocol.js";
import { StreamOwner, catchUpPlan } from "../../notifications/static/notifications/owner.js";
import { FakeClock, FakeEventSource, ownerDeps } from "./fakes.mjs";

const config = { streamUrl: "/notifications/stream/", apiUrl: "/notifications/api/", user: "alice" };
const note = (id, extra = {}) => ({ id, title: `n${id}`, body: "", level: "info", url: "", read: false, ...extra });

function owner(extra = {}) {
  const sent = [];
  const clock = new FakeClock();
  const o = new StreamOwner(config, (message, target) => sent.push({ message, target }), ownerDeps(clock, extra));
  return { o, sent, clock };
}

beforeEach(() => {
  FakeEventSource.instances = [];
});

const plan = (cursor, bufferFrom, ids, tab) => catchUpPlan({ cursor, bufferFrom, buffer: ids.map((id) => note(id)) }, tab);

test("catch-up: nothing when the tab is at or past the owner's cursor", () => {
  assert.deepEqual(plan(10, 5, [6, 8, 10], 10), { kind: "none" });
  assert.deepEqual(plan(10, 5, [6, 8, 10], 12), { kind: "none" });
  assert.deepEqual(plan(null, null, [], 3), { kind: "none" }); // no hello yet: nothing known
});

test("catch-up: from the buffer when it covers the tab's cursor", () => {
  const p = plan(10, 5, [6, 8, 10], 6);
  assert.equal(p.kind, "replay");
  assert.deepEqual(p.items.map((n) => n.id), [8, 10]);
  assert.deepEqual(plan(10, 5, [6, 8, 10], 5).items.map((n) => n.id), [6, 8, 10]); // exactly at bufferFrom
});

test("catch-up: a gap when the tab is behind the buffer", () => {
  assert.deepEqual(plan(10, 5, [6, 8, 10], 4), { kind: "gap", after: 4 });
  assert.deepEqual(plan(10, 5, [6, 8, 10], null), { kind: "gap", after: 0 }); // a tab that has nothing
  assert.deepEqual(plan(10, null, [], 4), { kind: "gap", after: 4 });
});

test("a tab that joins before hello waits for it, then gets the buffer", () => {
  const { o, sent } = owner();
  o.join("tab-a", 5);
  const es = FakeEventSource.instances[0];
  assert.equal(new URL(es.url).searchParams.get("last_event_id"), "5");
  assert.equal(sent.length, 1); // only the state
  es.emit("notification", note(6), 6);
  es.emit("notification", note(7), 7);
  es.emit("hello", { user: "alice", cursor: 7 }, 7);
  o.join("tab-b", 6); // joins later, one behind
  const b = sent.filter((s) => s.target === "tab-b" && s.message.kind === KIND.NOTIFICATION);
  assert.deepEqual(b.map((s) => s.message.data.id), [7]);
  assert.equal(o.cursor, 7);
});

test("a tab further behind than the buffer is told to fetch the gap", () => {
  const { o, sent } = owner();
  o.join("tab-a", 100);
  const es = FakeEventSource.instances[0];
  es.emit("hello", { user: "alice", cursor: 100 }, 100);
  for (let id = 101; id <= 100 + BUFFER_SIZE + 5; id++) es.emit("notification", note(id), id);
  assert.equal(o.bufferFrom, 105);
  o.join("tab-b", 104);
  o.join("tab-c", 105);
  const to = (tab) => sent.filter((s) => s.target === tab && s.message.kind !== KIND.STATE).map((s) => s.message);
  assert.deepEqual(to("tab-b"), [{ kind: KIND.GAP, after: 104 }]);
  assert.equal(to("tab-c").length, BUFFER_SIZE);
  assert.equal(to("tab-c")[0].data.id, 106);
});

test("duplicates by id are relayed once; ids that do not parse are ignored", () => {
  const { o, sent } = owner();
  o.join(null, 1);
  const es = FakeEventSource.instances[0];
  es.emit("notification", note(2), 2);
  es.emit("notification", note(2), 2);
  es.emit("notification", "not json", 3);
  es.emit("notification", { id: "x" }, 3);
  assert.deepEqual(sent.filter((s) => s.message.kind === KIND.NOTIFICATION).map((s) => s.message.data.id), [2]);
  assert.equal(o.cursor, 3); // the id still moved the cursor
});

test("read marks copy buffered notifications instead of mutating what was dispatched (bug b)", () => {
  const { o, sent } = owner();
  o.join(null, 0);
  const es = FakeEventSource.instances[0];
  es.emit("hello", { user: "alice", cursor: 0 }, 0);
  es.emit("notification", note(1), 1);
  es.emit("notification", note(2), 2);
  const dispatched = sent.filter((s) => s.message.kind === KIND.NOTIFICATION).map((s) => s.message.data);
  es.emit("read", { ids: [1], unread_count: 1 });
  es.emit("read", { ids: "all", unread_count: 0 });
  assert.deepEqual(dispatched.map((n) => n.read), [false, false]);
  assert.deepEqual(o.buffer.map((n) => n.read), [true, true]); // a tab joining later sees them read
  o.join("late", 0);
  const late = sent.filter((s) => s.target === "late" && s.message.kind === KIND.NOTIFICATION);
  assert.deepEqual(late.map((s) => s.message.data.read), [true, true]);
});

test("a refused stream (CLOSED) is reopened after backoff at the cursor; hello resets the failures", () => {
  const { o, clock } = owner();
  o.join(null, 4);
  FakeEventSource.instances[0].fail(2);
  assert.ok(o.waiting);
  clock.advance(499);
  assert.equal(FakeEventSource.instances.length, 1);
  clock.advance(1000); // 0.5 + 0.5 × 0.5 s with random() = 0.5 → 750 ms
  assert.equal(FakeEventSource.instances.length, 2);
  assert.equal(new URL(FakeEventSource.instances[1].url).searchParams.get("last_event_id"), "4");
  assert.equal(o.failures, 1);
  FakeEventSource.instances[1].emit("hello", { user: "alice", cursor: 9 }, 9);
  assert.equal(o.failures, 0);
  assert.equal(o.cursor, 9);
});

test("events of a replaced EventSource are ignored", () => {
  const { o, sent } = owner();
  o.join(null, 0);
  const first = FakeEventSource.instances[0];
  o.reconnectNow();
  first.emit("notification", note(5), 5);
  assert.equal(sent.filter((s) => s.message.kind === KIND.NOTIFICATION).length, 0);
  assert.equal(o.cursor, 0);
});

test("reset clears the buffer and posts the API list with replace and through", async () => {
  const fetched = [];
  const { o, sent } = owner({
    fetch: async (url) => {
      fetched.push(url);
      return { ok: true, status: 200, json: async () => ({ results: [note(50)], unread_count: 1 }) };
    },
  });
  o.join(null, 1);
  const es = FakeEventSource.instances[0];
  es.emit("notification", note(2), 2);
  es.emit("reset", { reason: "too-many", cursor: 50 }, 50);
  assert.deepEqual(o.buffer, []);
  assert.equal(o.bufferFrom, 50);
  await new Promise((r) => setImmediate(r));
  const list = sent.find((s) => s.message.kind === KIND.LIST).message;
  assert.deepEqual([list.replace, list.through, list.results.length], [true, 50, 1]);
  assert.equal(new URL(fetched[0]).searchParams.get("limit"), "100");
});
