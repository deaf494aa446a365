// The protocol module: payload parsing, ids, backoff, and the link rule (issue 12, item 4).
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";

import {
  backoffDelay,
  parseHello,
  parseNotification,
  parseRead,
  parseReset,
  safeUrl,
  toId,
} from "../../notifications/static/notifications/protocol.js";

// [url, safe]: the same rule as the server's (a link is rendered only for safe URLs).
const LINK_CASES = [
  ["https://example.com/a?b#c", true],
  ["http://example.com", true],
  ["HTTPS://EXAMPLE.COM/", true],
  ["http://user@example.com:8080/x", true],
  ["/", true],
  ["/path/to?x=1#y", true],
  ["/exports/7", true],
  ["", false],
  ["//evil.com", false],
  ["/\\evil.com", false],
  ["/\t/evil.com", false],
  ["/\n/evil.com", false],
  ["/\r/evil.com", false],
  ["/a\u0000b", false],
  ["/a\u007fb", false],
  ["/a\u001fb", false],
  ["https://exa\\mple.com", false],
  ["javascript:alert(1)", false],
  ["JavaScript:alert(1)", false],
  ["data:text/html,x", false],
  ["vbscript:x", false],
  ["http://", false],
  ["https:///evil.com", false],
  ["http://?x", false],
  ["http://#x", false],
  ["http://:80/", false],
  ["http:/evil.com", false],
  ["https:evil.com", false],
  ["ftp://example.com", false],
  ["relative/path", false],
  ["?q=1", false],
  ["#top", false],
  [" /a", false],
  ["/a ", false],
  [" https://example.com", false],
  ["https://example.com\u00a0", true], // only ASCII space counts as an edge (notifications/links.py)
  [" /ok", false],
  ["/ok ", false],
  ["\u3000/a", false],
  ["/a b", true],
  ["/é", true],
];

test("the link rule, inline table", () => {
  for (const [url, safe] of LINK_CASES) {
    assert.equal(safeUrl(url) !== null, safe, `safeUrl(${JSON.stringify(url)}) should be ${safe ? "safe" : "unsafe"}`);
  }
  assert.equal(safeUrl(null), null);
  assert.equal(safeUrl(42), null);
});

/** The server's table (tests/data/link_cases.json, written on another branch), when present. */
function sharedCases() {
  const path = new URL("../data/link_cases.json", import.meta.url);
  if (!existsSync(path)) return null;
  const data = JSON.parse(readFileSync(path, "utf8"));
  const rows = Array.isArray(data) ? data : Array.isArray(data.cases) ? data.cases : Object.entries(data);
  return rows.map((row) => {
    if (Array.isArray(row)) return [row[0], row[1]];
    const safe = row.safe ?? row.ok ?? row.valid ?? row.allowed ?? row.expected;
    if (typeof row.url !== "string" || typeof safe !== "boolean") throw new Error(`unknown row shape: ${JSON.stringify(row)}`);
    return [row.url, safe];
  });
}

test("the link rule, the server's shared table", (t) => {
  const cases = sharedCases();
  if (cases === null) {
    t.skip("tests/data/link_cases.json is not on this branch yet");
    return;
  }
  assert.ok(cases.length > 0);
  for (const [url, safe] of cases) {
    assert.equal(safeUrl(url) !== null, safe, `safeUrl(${JSON.stringify(url)}) should be ${safe ? "safe" : "unsafe"}`);
  }
});

test("ids are non-negative integers, else null", () => {
  assert.equal(toId("42"), 42);
  assert.equal(toId(7), 7);
  for (const bad of ["", "-1", "1.5", "x", "1e3", null, undefined, -3, 2.5, "99999999999999999999"]) {
    assert.equal(toId(bad), null, String(bad));
  }
});

test("payloads parse, or give null for what is not one", () => {
  assert.deepEqual(parseNotification('{"id": 3, "title": "t"}'), { id: 3, title: "t" });
  assert.equal(parseNotification('{"title": "t"}'), null);
  assert.equal(parseNotification("[1]"), null);
  assert.equal(parseNotification("{"), null);
  assert.deepEqual(parseHello('{"user": null, "cursor": 9}'), { user: null, cursor: 9 });
  assert.deepEqual(parseHello('{"user": "alice", "cursor": 9}'), { user: "alice", cursor: 9 });
  assert.deepEqual(parseRead('{"ids": "all", "unread_count": 0}'), { ids: "all", read: true, unread_count: 0 });
  assert.deepEqual(parseRead('{"ids": [1, 2], "unread_count": 4}'), { ids: [1, 2], read: true, unread_count: 4 });
  assert.equal(parseRead('{"ids": 3}'), null);
  assert.deepEqual(parseReset('{"reason": "expired", "cursor": 12}'), { reason: "expired", cursor: 12 });
  assert.deepEqual(parseReset("nonsense"), { reason: "", cursor: null });
});

test("backoff: between half and all of min(30 s, 1 s × 2ⁿ)", () => {
  assert.equal(backoffDelay(0, () => 0), 500);
  assert.equal(backoffDelay(0, () => 1), 1000);
  assert.equal(backoffDelay(3, () => 0), 4000);
  assert.equal(backoffDelay(10, () => 0), 15000);
  assert.equal(backoffDelay(10, () => 1), 30000);
});
