/* Leader election among the tabs of one browser, over a BroadcastChannel-like `post`.
 *
 * The leader says "hb" every HEARTBEAT_MS; a tab that has heard nothing for LEASE_MS (or hears
 * the leader resign) claims; a claim stands if no leader and no smaller-id candidate objects
 * within CLAIM_WAIT_MS. Tie-breaks: the smaller tab id wins a tie between candidates and a
 * split between two leaders. A live leader answers every claim and ping at once, so a throttled
 * background tab is not deposed by a slow timer. (Web Locks would do with less code, but exist
 * only in secure contexts; plain http:// sites need this too.)
 *
 * No DOM: clock and timers are injected, so tests drive it with a fake clock.
 */
import { CHANNEL, CLAIM_WAIT_MS, HEARTBEAT_MS, LEASE_MS } from "./protocol.js";

/** Does tab id `a` win over `b`? The smaller id wins (ids compare as strings). */
export function outranks(a, b) {
  return a < b;
}

/** A tab id: the time in base 36 (same length for decades, so string order is time order), then noise. */
export function newTabId(now, random) {
  return `${now.toString(36)}-${random().toString(36).slice(2)}`;
}

export class Election {
  /** post(message) broadcasts to the other tabs; on: {lead(), follow(leaderId, changed), stepDown()};
   *  deps: {now, setTimeout, clearTimeout, setInterval, clearInterval}. */
  constructor(tabId, post, on, deps) {
    this.tabId = tabId;
    this.post = post;
    this.on = on;
    this.deps = deps;
    this.role = "follower"; // "follower" | "candidate" | "leader"
    this.leaderId = null;
    this.heardAt = deps.now();
    this.timers = [];
  }

  get leading() {
    return this.role === "leader";
  }

  start() {
    // A leader answers "ping" at once (and this tab then follows it); silence means none.
    this.post({ t: CHANNEL.PING, from: this.tabId });
    this.timers.push(
      this.deps.setTimeout(() => {
        if (this.leaderId === null && this.role === "follower") this.claim();
      }, 2 * CLAIM_WAIT_MS),
    );
    this.interval = this.deps.setInterval(() => this.tick(), HEARTBEAT_MS);
  }

  stop() {
    this.resign();
    for (const timer of this.timers) this.deps.clearTimeout(timer);
    this.timers = [];
    if (this.interval !== undefined) this.deps.clearInterval(this.interval);
  }

  tick() {
    if (this.role === "leader") this.post({ t: CHANNEL.HEARTBEAT, from: this.tabId });
    else if (this.role === "follower" && this.deps.now() - this.heardAt > LEASE_MS) this.claim();
  }

  claim() {
    this.role = "candidate";
    this.post({ t: CHANNEL.CLAIM, from: this.tabId });
    const timer = this.deps.setTimeout(() => {
      this.timers = this.timers.filter((t) => t !== timer);
      if (this.role === "candidate") this.lead();
    }, CLAIM_WAIT_MS);
    this.timers.push(timer);
  }

  lead() {
    this.role = "leader";
    this.leaderId = this.tabId;
    this.post({ t: CHANNEL.HEARTBEAT, from: this.tabId });
    this.on.lead();
  }

  follow(leaderId) {
    let changed = leaderId !== this.leaderId;
    if (this.role === "leader") {
      this.on.stepDown();
      changed = true;
    }
    this.role = "follower";
    this.heardAt = this.deps.now();
    this.leaderId = leaderId;
    this.on.follow(leaderId, changed);
  }

  /** The leader goes (pagehide): the others claim at once instead of waiting out the lease. */
  resign() {
    if (this.role !== "leader") return;
    this.on.stepDown();
    this.role = "follower";
    this.leaderId = null;
    this.post({ t: CHANNEL.RESIGN, from: this.tabId });
  }

  /** Back from the bfcache: whoever answers the ping is the leader to join. */
  rejoin() {
    this.heardAt = this.deps.now();
    this.leaderId = null;
    this.post({ t: CHANNEL.PING, from: this.tabId });
  }

  /** An election message from another tab; returns false for messages that are not the election's. */
  onMessage(m) {
    const leading = this.role === "leader";
    if (m.t === CHANNEL.HEARTBEAT) {
      // Two leaders (a split): the smaller id keeps leading and reasserts; the other follows.
      if (leading && outranks(this.tabId, m.from)) this.post({ t: CHANNEL.HEARTBEAT, from: this.tabId });
      else this.follow(m.from);
    } else if (m.t === CHANNEL.CLAIM || m.t === CHANNEL.PING) {
      if (leading) this.post({ t: CHANNEL.HEARTBEAT, from: this.tabId });
      else if (m.t === CHANNEL.CLAIM && this.role === "candidate" && outranks(m.from, this.tabId)) {
        this.role = "follower"; // the smaller id wins; wait for its heartbeat
        this.heardAt = this.deps.now();
      }
    } else if (m.t === CHANNEL.RESIGN) {
      if (m.from === this.leaderId && !leading) {
        this.leaderId = null;
        this.claim();
      }
    } else {
      return false;
    }
    return true;
  }
}
