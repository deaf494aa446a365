/* The widget: keeps {% notifications_widget %}'s server-rendered markup live.
 *
 * Items are never built here: the server renders notifications/_item.html once more inside a
 * <template data-n-item-template> (a placeholder item with every part present), and render()
 * clones it, fills it with textContent and attributes, and removes the parts a notification
 * does not have. So the markup has one definition, the template. Text is never parsed as HTML.
 */
import { LEVELS, safeUrl, toId } from "./protocol.js";

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

/** Fill a clone of the item template with notification `n` (readUrl: with {id}, or ""). */
export function renderItem(template, n, readUrl) {
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
  const time = li.querySelector("time");
  if (time) {
    time.setAttribute("datetime", String(n.created_at));
    if (!formatTime(time)) remove(time);
  }
  const body = li.querySelector(".n-body");
  if (n.body && body) body.textContent = n.body;
  else remove(body);
  const link = li.querySelector(".n-url");
  const href = safeUrl(n.url);
  if (href && link) link.setAttribute("href", href);
  else remove(link);
  const form = li.querySelector(".n-read");
  if (unread && readUrl && form) {
    form.setAttribute("action", readUrl.replace("{id}", String(n.id)));
    for (const node of form.querySelectorAll("[aria-label]")) {
      node.setAttribute("aria-label", node.getAttribute("aria-label").split(TITLE_SLOT).join(n.title));
    }
  } else {
    remove(form);
  }
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
    const on = (name, handler) => document.addEventListener(`notifications:${name}`, (e) => handler(e.detail));
    on("state", (detail) => this.showState(detail.state));
    on("notification", (n) => {
      this.add(n);
      this.showUnread();
    });
    on("read", (detail) => {
      this.markRead(detail.ids);
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

  item(id) {
    return this.list.querySelector(`.n-item[data-id="${String(toId(id))}"]`);
  }

  /** Insert in id order (newest first): live ones go on top, gap fills where they belong. */
  add(n) {
    if (this.item(n.id) || !this.template) return;
    remove(this.list.querySelector(".n-empty"));
    const node = renderItem(this.template, n, this.client.config.readUrl);
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
      li.classList.remove("unread");
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
    if (!this.list.querySelector(".n-item") && !this.list.querySelector(".n-empty")) {
      const empty = this.document.createElement("li");
      empty.className = "n-empty";
      empty.textContent = "No notifications yet.";
      this.list.appendChild(empty);
    }
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
