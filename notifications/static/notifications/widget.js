/* The widget: keeps {% notifications_widget %}'s server-rendered markup live.
 *
 * Items are never built here: the server renders notifications/_item.html once more inside a
 * <template data-n-item-template> (a placeholder item with every part present), and render()
 * clones it, fills it with textContent and attributes, and removes the parts a notification
 * does not have. So the markup has one definition, the template. Text is never parsed as HTML.
 */
import { LEVELS, msUntil, progressOf, safeUrl, toId } from "./protocol.js";

/** The placeholder title in the template (templatetags ITEM_TEMPLATE), replaced in attributes. */
export const TITLE_SLOT = "{title}";

const STATE_TEXT = {
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  "signed-out": "signed out — sign in again",
  "session-changed": "signed in elsewhere — reload",
};

function formatTime(node) {
  const when = new Date(node.getAttribute("datetime"));
  if (Number.isNaN(when.getTime())) return false;
  node.textContent = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  node.title = when.toISOString();
  return true;
}

function remove(node) {
  if (node && node.parentNode) node.parentNode.removeChild(node);
}

/** The longest timeout browsers keep (2³¹−1 ms, about 24.8 days); later expiries re-arm. */
const MAX_TIMEOUT = 2147483647;
const UNREAD_LABEL = "Unread: ";

/** Put `fresh` in place of `li` (the same notice, rendered again) without replaying the entrance animation. */
function replace(li, fresh) {
  li.replaceWith(fresh);
  if (typeof fresh.getAnimations === "function") for (const a of fresh.getAnimations()) a.finish();
}

function fillForm(form, url, n) {
  form.setAttribute("action", url.replace("{id}", String(n.id)));
  for (const node of form.querySelectorAll("[aria-label]")) {
    node.setAttribute("aria-label", node.getAttribute("aria-label").split(TITLE_SLOT).join(n.title));
  }
}

/** Fill a clone of the item template with notification `n`.
 *  urls: {read, unread, archive} with {id} in place of the id (or "" / a string: the read URL only). */
export function renderItem(template, n, urls) {
  const u = typeof urls === "string" || !urls ? { read: urls || "" } : urls;
  const readUrl = u.read || "";
  const li = template.content.querySelector(".n-item").cloneNode(true);
  const level = LEVELS.includes(n.level) ? n.level : "info";
  const unread = n.read === false;
  const placeholder = [...li.classList].find((name) => name.startsWith("level-"));
  if (placeholder) li.classList.replace(placeholder, `level-${level}`);
  else li.classList.add(`level-${level}`);
  li.classList.toggle("unread", unread);
  li.setAttribute("data-id", String(n.id));
  li.querySelector(".n-level").textContent = level;
  li.querySelector(".n-title").textContent = n.title;
  const label = li.querySelector(".n-unread-label");
  if (label && !unread) remove(label);
  const category = li.querySelector(".n-category");
  if (category && typeof n.category === "string" && n.category) category.textContent = n.category;
  else remove(category);
  if (typeof n.expires_at === "string" && n.expires_at) li.setAttribute("data-expires", n.expires_at);
  else li.removeAttribute("data-expires");
  const time = li.querySelector("time");
  if (time) {
    time.setAttribute("datetime", String(n.created_at));
    if (!formatTime(time)) remove(time);
  }
  const body = li.querySelector(".n-body");
  if (n.body && body) body.textContent = n.body;
  else remove(body);
  const bar = li.querySelector(".n-progress");
  const progress = progressOf(n);
  if (bar && progress !== null) {
    bar.setAttribute("value", String(progress));
    bar.textContent = `${progress} %`;
  } else remove(bar);
  const link = li.querySelector(".n-url");
  const href = safeUrl(n.url);
  if (href && link) link.setAttribute("href", href);
  else remove(link);
  const form = li.querySelector(".n-read");
  if (unread && readUrl && form) fillForm(form, readUrl, n);
  else remove(form);
  const again = li.querySelector(".n-unread");
  if (n.read === true && u.unread && again) fillForm(again, u.unread, n);
  else remove(again);
  const archive = li.querySelector(".n-archive");
  if (u.archive && archive) fillForm(archive, u.archive, n);
  else remove(archive);
  const foot = li.querySelector(".n-foot");
  if (foot && !foot.firstElementChild) remove(foot);
  return li;
}

export class Widget {
  constructor(root, client, document) {
    this.root = root;
    this.client = client;
    this.document = document;
    this.list = root.querySelector(".n-list");
    this.state = root.querySelector(".n-state");
    this.badge = root.querySelector(".n-badge");
    this.template = root.querySelector("template[data-n-item-template]");
    const signedIn = !!client.config.user;
    const unread = this.badge ? toId(this.badge.getAttribute("data-count")) : null;
    client.unread = signedIn ? unread || 0 : null;
    client.markSeen([...this.list.querySelectorAll(".n-item[data-id]")].map((li) => toId(li.getAttribute("data-id"))));
    for (const time of this.list.querySelectorAll("time[datetime]")) formatTime(time);
    const query = new URLSearchParams(document.location ? document.location.search : "");
    const flag = (name) => ["1", "true"].includes((query.get(name) || "").toLowerCase());
    this.archivedView = flag("archived");
    // A page of older notices, the archive or the muted ones: live notices do not belong on it;
    // a category page takes only its category's.
    this.liveView = !this.archivedView && !flag("muted") && !query.get("before");
    this.category = query.get("category") || "";
    this.timers = new Map(); // id → timeout: expiring notices leave the page at their time
    for (const li of this.list.querySelectorAll(".n-item[data-expires]")) this.scheduleExpiry(li);
    const on = (name, handler) => document.addEventListener(`notifications:${name}`, (e) => handler(e.detail));
    on("state", (detail) => this.showState(detail.state));
    on("notification", (n) => {
      if (this.liveView && (!this.category || n.category === this.category)) this.add(n);
      this.showUnread();
    });
    on("update", (n) => this.update(n));
    on("retract", (detail) => {
      const li = this.item(detail.id);
      if (li && li.classList.contains("unread") && this.client.unread) this.client.unread -= 1;
      this.drop(li);
      this.showUnread();
    });
    on("read", (detail) => {
      if (detail.read === false) this.markUnread(detail.ids);
      else this.markRead(detail.ids);
      this.showUnread();
    });
    on("archive", (detail) => {
      // This page lists the inbox (or, ?archived=1, the archive): a notice that left it goes.
      if (detail.archived !== this.archivedView) for (const id of detail.ids) this.drop(this.item(id));
      this.showUnread();
    });
    on("list", (detail) => {
      this.applyList(detail);
      this.showUnread();
    });
    root.addEventListener("submit", (e) => this.onSubmit(e));
    if (this.state) this.state.hidden = false;
    this.showState(client.state);
  }

  showState(state) {
    if (!this.state) return;
    this.state.setAttribute("data-state", state);
    this.state.textContent = STATE_TEXT[state] || state;
  }

  showUnread() {
    const count = this.client.unread;
    if (!this.badge || count === null) return;
    this.badge.setAttribute("data-count", String(count));
    this.badge.textContent = String(count);
    this.badge.setAttribute("aria-label", count === 1 ? "1 unread notification" : `${count} unread notifications`);
  }

  urls() {
    const c = this.client.config;
    return { read: c.readUrl, unread: c.unreadUrl, archive: this.archivedView ? c.unarchiveUrl : c.archiveUrl };
  }

  /** Remove an item (archived elsewhere, expired), keeping the keyboard focus on the list. */
  drop(li) {
    if (!li) return;
    const id = toId(li.getAttribute("data-id"));
    const timer = this.timers.get(id);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.timers.delete(id);
    }
    const focusHere = li.contains(this.document.activeElement);
    const next = li.nextElementSibling || li.previousElementSibling;
    remove(li);
    if (focusHere && next && next.classList.contains("n-item")) next.focus();
    if (!this.list.querySelector(".n-item")) this.showEmpty();
  }

  showEmpty() {
    if (this.list.querySelector(".n-empty")) return;
    const empty = this.document.createElement("li");
    empty.className = "n-empty";
    empty.textContent = this.archivedView ? "No archived notifications." : "No notifications yet.";
    this.list.appendChild(empty);
  }

  scheduleExpiry(li) {
    const id = toId(li.getAttribute("data-id"));
    const wait = msUntil(li.getAttribute("data-expires"), Date.now());
    if (wait === null || id === null) return;
    const old = this.timers.get(id);
    if (old !== undefined) clearTimeout(old);
    const timer = setTimeout(() => {
      this.timers.delete(id);
      const node = this.item(id);
      if (!node) return;
      if (wait > MAX_TIMEOUT) this.scheduleExpiry(node);
      else this.drop(node);
    }, Math.min(wait, MAX_TIMEOUT));
    this.timers.set(id, timer);
  }

  markUnread(ids) {
    if (ids === "all") return;
    for (const id of ids) {
      const li = this.item(id);
      if (!li || li.classList.contains("unread")) continue;
      const fresh = renderItem(this.template, this.itemData(li, false), this.urls());
      const focused = li.contains(this.document.activeElement);
      replace(li, fresh);
      if (focused) (fresh.querySelector(".n-read button") || fresh).focus();
      if (fresh.hasAttribute("data-expires")) this.scheduleExpiry(fresh);
    }
  }

  /** A notice changed (SPEC §14): render its card again in place, keeping its read state and focus.
   *  A notice this page does not show (archived, older, filtered out) stays off it. */
  update(n) {
    const li = this.item(n.id);
    if (!li || !this.template) return;
    const fresh = renderItem(this.template, { ...n, read: !li.classList.contains("unread") }, this.urls());
    const focused = this.document.activeElement;
    const inside = li.contains(focused) ? [...li.querySelectorAll("button")].indexOf(focused) : -2;
    replace(li, fresh);
    if (inside >= 0) (fresh.querySelectorAll("button")[inside] || fresh).focus();
    else if (inside === -1) fresh.focus();
    if (fresh.hasAttribute("data-expires")) this.scheduleExpiry(fresh);
  }

  /** What a rendered item shows, as a notification (to render it again with another read state). */
  itemData(li, read) {
    const text = (selector) => {
      const node = li.querySelector(selector);
      return node ? node.textContent : "";
    };
    const time = li.querySelector("time");
    const link = li.querySelector(".n-url");
    const level = [...li.classList].find((name) => name.startsWith("level-"));
    const bar = li.querySelector(".n-progress");
    return {
      progress: bar ? toId(bar.getAttribute("value")) : null,
      id: toId(li.getAttribute("data-id")),
      title: text(".n-title"),
      body: text(".n-body"),
      level: level ? level.slice("level-".length) : "info",
      url: link ? link.getAttribute("href") : "",
      category: text(".n-category"),
      created_at: time ? time.getAttribute("datetime") : "",
      expires_at: li.getAttribute("data-expires") || "",
      read,
    };
  }

  item(id) {
    return this.list.querySelector(`.n-item[data-id="${String(toId(id))}"]`);
  }

  /** Insert in id order (newest first): live ones go on top, gap fills where they belong. */
  add(n) {
    if (this.item(n.id) || !this.template) return;
    remove(this.list.querySelector(".n-empty"));
    const node = renderItem(this.template, n, this.urls());
    if (node.hasAttribute("data-expires")) this.scheduleExpiry(node);
    for (const li of this.list.querySelectorAll(".n-item[data-id]")) {
      if (toId(li.getAttribute("data-id")) < n.id) {
        this.list.insertBefore(node, li);
        return;
      }
    }
    this.list.appendChild(node);
  }

  markRead(ids) {
    const nodes = ids === "all" ? [...this.list.querySelectorAll(".n-item.unread")] : ids.map((id) => this.item(id)).filter(Boolean);
    const focused = this.document.activeElement;
    for (const li of nodes) {
      if (!li.classList.contains("unread")) continue;
      if (this.client.config.unreadUrl) {
        // Rendered again, read, so it gets its "Mark unread" form from the one template.
        const fresh = renderItem(this.template, this.itemData(li, true), this.urls());
        const keep = li.contains(focused);
        replace(li, fresh);
        if (keep) fresh.focus(); // the keyboard user stays in place, not at the page's top
        if (fresh.hasAttribute("data-expires")) this.scheduleExpiry(fresh);
        continue;
      }
      li.classList.remove("unread");
      remove(li.querySelector(".n-unread-label"));
      const form = li.querySelector(".n-read");
      if (!form) continue;
      // Keep the keyboard user in place: focus moves to the item, not to the page's top.
      if (form.contains(focused)) li.focus();
      remove(form);
      const foot = li.querySelector(".n-foot");
      if (foot && !foot.firstElementChild) remove(foot);
    }
  }

  applyList(m) {
    this.list.setAttribute("aria-busy", "true");
    if (m.replace) {
      const keep = new Set(m.results.map((n) => n.id));
      for (const li of this.list.querySelectorAll(".n-item[data-id]")) {
        const id = toId(li.getAttribute("data-id"));
        if (!keep.has(id) && (m.through === null || id <= m.through)) remove(li);
      }
    }
    for (const n of [...m.results].reverse()) {
      const existing = this.item(n.id);
      if (!existing) this.add(n);
      else if (n.read === true && existing.classList.contains("unread")) this.markRead([n.id]);
    }
    if (!this.list.querySelector(".n-item")) this.showEmpty();
    this.list.removeAttribute("aria-busy");
  }

  onSubmit(e) {
    const form = e.target;
    const client = this.client;
    // Not `disabled`: that would drop the keyboard focus before the item is updated.
    const busy = (on) => {
      if (on && form.getAttribute("aria-busy") === "true") return false;
      form.setAttribute("aria-busy", on ? "true" : "false");
      return true;
    };
    if (form.classList.contains("n-read")) {
      const li = form.closest(".n-item");
      if (!li || !client.config.readUrl) return;
      e.preventDefault();
      if (!busy(true)) return;
      client.markRead(toId(li.getAttribute("data-id"))).catch(() => busy(false));
    } else if (form.classList.contains("n-unread") || form.classList.contains("n-archive")) {
      const li = form.closest(".n-item");
      const archive = form.classList.contains("n-archive");
      const url = archive ? (this.archivedView ? client.config.unarchiveUrl : client.config.archiveUrl) : client.config.unreadUrl;
      if (!li || !url) return;
      e.preventDefault();
      if (!busy(true)) return;
      const id = toId(li.getAttribute("data-id"));
      (archive ? client.archive(id, !this.archivedView) : client.markUnread(id)).catch(() => busy(false));
    } else if (form.classList.contains("n-read-all")) {
      if (!client.config.readAllUrl) return;
      e.preventDefault();
      if (!busy(true)) return;
      client.markAllRead().then(
        () => busy(false),
        () => busy(false),
      );
    }
  }
}
