// Leader election over a fake BroadcastChannel bus with a fake clock: tie-breaks and failover.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Election, newTabId, outranks } from "../../notifications/static/notifications/election.js";
import { CLAIM_WAIT_MS, LEASE_MS } from "../../notifications/static/notifications/protocol.js";
import { Bus, FakeClock } from "./fakes.mjs";

function tab(bus, clock, id, log) {
  const channel = bus.channel();
  const events = [];
  const election = new Election(
    id,
    (m) => channel.postMessage(m),
    {
      lead: () => events.push("lead"),
      follow: (leader, changed) => events.push(`follow ${leader}${changed ? " (changed)" : ""}`),
      stepDown: () => events.push("step down"),
    },
    clock,
  );
  channel.onmessage = (e) => election.onMessage(e.data);
  if (log) log[id] = events;
  return election;
}

const leaders = (tabs) => tabs.filter((t) => t.leading).map((t) => t.tabId);

test("the smaller id outranks; tab ids sort by creation time", () => {
  assert.ok(outranks("a", "b"));
  assert.ok(!outranks("b", "a"));
  const early = newTabId(1_700_000_000_000, () => 0.9);
  const late = newTabId(1_700_000_000_001, () => 0.1);
  assert.ok(outranks(early, late));
});

test("a lone tab leads after the ping goes unanswered and its claim stands", () => {
  const bus = new Bus();
  const clock = new FakeClock();
  const a = tab(bus, clock, "k1");
  a.start();
  clock.advance(2 * CLAIM_WAIT_MS);
  assert.equal(a.role, "candidate");
  clock.advance(CLAIM_WAIT_MS);
  assert.equal(a.role, "leader");
});

test("a tab that starts while a leader lives follows it at once", () => {
  const bus = new Bus();
  const clock = new FakeClock();
  const log = {};
  const a = tab(bus, clock, "k1", log);
  a.start();
  clock.advance(1000);
  const b = tab(bus, clock, "k2", log);
  b.start(); // ping → the leader answers with a heartbeat
  assert.deepEqual(log.k2, ["follow k1 (changed)"]);
  clock.advance(10_000);
  assert.deepEqual(leaders([a, b]), ["k1"]);
});

test("tie: two candidates claiming at once → the smaller id leads, the other follows", () => {
  const bus = new Bus();
  const clock = new FakeClock();
  const tabs = ["k2", "k1", "k3"].map((id) => tab(bus, clock, id));
  for (const t of tabs) t.start(); // nobody answers any ping: all claim at the same instant
  clock.advance(2 * CLAIM_WAIT_MS + CLAIM_WAIT_MS + 1);
  assert.deepEqual(leaders(tabs), ["k1"]);
  clock.advance(10_000);
  assert.deepEqual(leaders(tabs), ["k1"]);
  assert.ok(tabs.every((t) => t.leaderId === "k1"));
});

test("split: two leaders that hear each other resolve to the smaller id", () => {
  const bus = new Bus();
  const clock = new FakeClock();
  const log = {};
  const a = tab(bus, clock, "k1", log);
  const b = tab(bus, clock, "k2", log);
  // Both became leaders while they could not hear each other.
  a.role = b.role = "leader";
  a.leaderId = "k1";
  b.leaderId = "k2";
  a.tick(); // k1's heartbeat: k2 steps down; k1 ignores k2's since it outranks
  assert.deepEqual(leaders([a, b]), ["k1"]);
  assert.deepEqual(log.k2, ["step down", "follow k1 (changed)"]);
  b.role = "leader";
  b.tick(); // a larger leader's heartbeat makes the smaller one reassert, never step down
  assert.deepEqual(leaders([a, b]), ["k1"]);
});

test("a live leader answers a claim from a throttled tab, which then follows", () => {
  const bus = new Bus();
  const clock = new FakeClock();
  const a = tab(bus, clock, "k9");
  a.start();
  clock.advance(1000);
  const b = tab(bus, clock, "k1"); // smaller id, but the leader is alive
  b.claim();
  clock.advance(CLAIM_WAIT_MS + 1);
  assert.deepEqual(leaders([a, b]), ["k9"]);
});

test("resign → a follower claims at once; a crashed leader is replaced after the lease", () => {
  const bus = new Bus();
  const clock = new FakeClock();
  const [a, b, c] = ["k1", "k2", "k3"].map((id) => tab(bus, clock, id));
  a.start();
  clock.advance(1000);
  b.start();
  c.start();
  clock.advance(1000);
  a.resign();
  clock.advance(CLAIM_WAIT_MS + 1);
  assert.deepEqual(leaders([a, b, c]), ["k2"]); // the smaller of the two claimants
  // k2 crashes: no resign, no heartbeats.
  bus.channels[1].onmessage = null;
  b.stop = () => {};
  const interval = b.interval;
  clock.clearInterval(interval);
  b.role = "follower"; // it is gone; only what the others hear matters
  clock.advance(LEASE_MS + 1000 + CLAIM_WAIT_MS + 10);
  assert.ok(c.leading || a.leading);
  assert.equal(leaders([a, c]).length, 1);
});
