/**
 * DOM building for the web app. Text always goes in as textContent, never as
 * HTML, so a message or a name cannot inject markup.
 */
import type { ChatMessage } from "@chat/client";

/**
 * GroupLike is the page's entry for one group: from the SDK's listGroups,
 * kept current by live events. headSeq is the newest seq accounted for in
 * unreadCount; liveUnread are the seqs of others' messages counted live
 * since the last list.
 */
export interface GroupLike {
  groupId: string;
  name: string;
  headSeq: bigint;
  unreadCount: number;
  liveUnread: bigint[];
}

/** $ is the element with `id`; it throws when the page has none (a broken index.html). */
export function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no #${id}`);
  return el as T;
}

function el(tag: string, className: string, text: string): HTMLElement {
  const e = document.createElement(tag);
  if (className) e.className = className;
  e.textContent = text;
  return e;
}

/**
 * messageItem is one list item of a group's messages: seq, sender, text.
 * `data-seq` carries the seq, for the list's order and for tests.
 */
export function messageItem(m: ChatMessage): HTMLLIElement {
  const li = document.createElement("li");
  li.dataset.seq = m.seq.toString();
  li.append(el("span", "seq", `#${m.seq}`), el("span", "sender", m.sender.username), el("span", "text", m.text));
  return li;
}

/**
 * groupButton is a group list entry: a button named after the group and,
 * when there are unread messages, their count ("team, 3 unread" is its
 * accessible name). `current` marks the open group (aria-current).
 */
export function groupButton(g: GroupLike, current: boolean, onOpen: () => void): HTMLLIElement {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.append(el("span", "name", g.name));
  if (g.unreadCount > 0) {
    const count = g.unreadCount >= 999 ? "999+" : String(g.unreadCount);
    button.append(el("span", "unread", count));
    button.setAttribute("aria-label", `${g.name}, ${count} unread`);
  }
  if (current) button.setAttribute("aria-current", "true");
  button.addEventListener("click", onOpen);
  li.append(button);
  return li;
}

/** CONNECTION_TEXT is what the status line says in each connection state of the SDK. */
const CONNECTION_TEXT: Readonly<Record<string, string>> = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  closed: "offline",
};

/** setConnection shows the SDK's connection state in the header's status line ("" clears it). */
export function setConnection(state: string): void {
  const p = document.getElementById("connection");
  if (!p) return;
  p.dataset.state = state;
  p.textContent = CONNECTION_TEXT[state] ?? state;
}
