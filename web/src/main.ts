/**
 * The web app: sign in, the group list with unread counts, one open group
 * (its messages paged backwards, live messages, send, add a member).
 * Everything goes through the @chat/client SDK on this page's own origin;
 * the SDK owns the live connection, its resume cursors and the session (both
 * in localStorage). The page keeps one invariant of its own: the open
 * group's list shows each seq at most once, in seq order, whether the
 * message came from history, the live connection or a send's answer.
 */
import {
  type ChatEvent,
  ChatClient,
  type ChatMessage,
  ConnectError,
  type HistoryPager,
  LocalStorageCursorStore,
  LocalStorageTokenStore,
} from "@chat/client";
import "./app.css";
import { $, type GroupLike, groupButton, messageItem, setConnection } from "./view.js";

/** PAGE_SIZE is how many messages one history page holds. */
const PAGE_SIZE = 30;

const client = new ChatClient({
  baseUrl: location.origin,
  tokenStore: new LocalStorageTokenStore(),
  cursorStore: new LocalStorageCursorStore(),
});

/** groups are the user's groups by id (see GroupLike). */
const groups = new Map<string, GroupLike>();
/** OpenGroup is the group on screen: its pager, the list items by seq, the read marker sent, a page load in progress. */
interface OpenGroup {
  readonly id: string;
  readonly pager: HistoryPager;
  readonly shown: Map<bigint, HTMLLIElement>;
  markedUpTo: bigint;
  loading: boolean;
}
let open: OpenGroup | undefined;

const authForm = $<HTMLFormElement>("auth-form");
const list = $<HTMLOListElement>("messages");
const scroller = $<HTMLDivElement>("scroller");
const olderButton = $<HTMLButtonElement>("older");

// ---- session -------------------------------------------------------------------------------------

authForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const register = (ev.submitter as HTMLButtonElement | null)?.value === "register";
  const data = new FormData(authForm);
  const username = String(data.get("username") ?? "");
  const password = String(data.get("password") ?? "");
  $("auth-error").textContent = "";
  (register ? client.register(username, password) : client.login(username, password)).then(signedIn, (e: unknown) => {
    $("auth-error").textContent = errorText(e);
  });
});

$("logout").addEventListener("click", () => {
  client.logout().catch(showError).finally(signedOut);
});

function signedIn(): void {
  $("me").textContent = `Signed in as ${client.user?.username ?? ""}`;
  authForm.reset();
  for (const id of ["me", "logout", "home"]) $(id).hidden = false;
  $("auth").hidden = true;
  client.start().catch(showError);
  void refreshGroups();
}

function signedOut(): void {
  void client.close();
  groups.clear();
  closeGroup();
  $("group-list").replaceChildren();
  for (const id of ["me", "logout", "home"]) $(id).hidden = true;
  $("auth").hidden = false;
  $("group-error").textContent = "";
  $("notice").textContent = "";
  setConnection("");
}

client.on("state", (s) => setConnection(s.state));
// Back online (another network, a laptop waking up): resume now rather than when the backoff says.
addEventListener("online", () => {
  if (client.user) client.reconnect();
});
client.on("signedOut", signedOut);
client.on("error", (e) => console.warn("chat client:", errorText(e)));

// ---- groups --------------------------------------------------------------------------------------

let refreshing: Promise<void> | undefined;
let refreshAgain = false;

/**
 * refreshGroups reloads the list (names, unread counts) from the server, one
 * load at a time: calls while one runs share it and one more load after it
 * (so a burst of events of a new group costs two loads, not one each). The
 * promise resolves once a load that started after the call has finished.
 */
function refreshGroups(): Promise<void> {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      await loadGroups();
    } while (refreshAgain);
  })().finally(() => {
    refreshing = undefined;
  });
  return refreshing;
}

/**
 * loadGroups replaces the list with a fresh one. Others' messages counted live
 * above the fresh list's head are added to its count: they arrived while it
 * was on its way, and it does not include them.
 */
async function loadGroups(): Promise<void> {
  const fresh = await client.listGroups().catch((e: unknown) => void showError(e));
  if (!fresh) return;
  const old = new Map(groups);
  groups.clear();
  for (const g of fresh) {
    const before = old.get(g.groupId);
    const liveUnread = (before?.liveUnread ?? []).filter((seq) => seq > g.headSeq);
    groups.set(g.groupId, {
      groupId: g.groupId,
      name: g.name,
      headSeq: before && before.headSeq > g.headSeq ? before.headSeq : g.headSeq,
      liveUnread,
      unreadCount: open?.id === g.groupId ? 0 : g.unreadCount + liveUnread.length,
    });
  }
  const current = open && groups.get(open.id);
  if (current) $("group-title").textContent = current.name;
  else if (open) closeGroup();
  renderGroups();
}

function renderGroups(): void {
  const items = [...groups.values()].sort((a, b) => a.name.localeCompare(b.name) || a.groupId.localeCompare(b.groupId));
  $("group-list").replaceChildren(...items.map((g) => groupButton(g, g.groupId === open?.id, () => void openGroup(g.groupId))));
}

onSubmit("new-group", async (data) => {
  const g = await client.createGroup(String(data.get("name") ?? "").trim());
  await refreshGroups();
  await openGroup(g.groupId);
});

onSubmit("add-member", async (data) => {
  const who = String(data.get("member") ?? "").trim();
  if (!open) return;
  const { member } = await client.addMember(open.id, who);
  $("notice").textContent = `${member?.user?.username ?? who} was added to ${groups.get(open.id)?.name ?? "the group"}`;
});

// ---- the open group ------------------------------------------------------------------------------

async function openGroup(groupId: string): Promise<void> {
  const g = groups.get(groupId);
  if (!g) return;
  open = { id: groupId, pager: client.history(groupId, { pageSize: PAGE_SIZE }), shown: new Map(), markedUpTo: 0n, loading: false };
  g.unreadCount = 0;
  g.liveUnread = [];
  $("conversation").hidden = false;
  $("group-title").textContent = g.name;
  $("group-error").textContent = "";
  list.replaceChildren();
  olderButton.hidden = false;
  renderGroups();
  await loadOlder();
  scroller.scrollTop = scroller.scrollHeight;
}

function closeGroup(): void {
  open = undefined;
  list.replaceChildren();
  $("conversation").hidden = true;
}

/** loadOlder puts the next older page above what is shown, keeping the reader's place. */
async function loadOlder(): Promise<void> {
  const current = open;
  if (!current || current.loading) return;
  current.loading = true;
  olderButton.disabled = true;
  try {
    const page = await current.pager.older();
    if (open !== current) return;
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    for (const m of page) show(m);
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
    olderButton.hidden = current.pager.done;
    markShownRead();
  } catch (e) {
    showError(e);
  } finally {
    current.loading = false;
    if (open === current) olderButton.disabled = false;
  }
}

olderButton.addEventListener("click", () => void loadOlder());
scroller.addEventListener("scroll", () => {
  if (scroller.scrollTop < 40 && !olderButton.hidden) void loadOlder();
});

/** show puts a message of the open group at its seq's place in the list; a seq already shown is left as it is. */
function show(m: ChatMessage): void {
  if (!open || m.groupId !== open.id || open.shown.has(m.seq)) return;
  let next: HTMLLIElement | null = null;
  let nextSeq = 0n;
  for (const [seq, li] of open.shown) {
    if (seq > m.seq && (next === null || seq < nextSeq)) [next, nextSeq] = [li, seq];
  }
  const li = messageItem(m);
  list.insertBefore(li, next);
  open.shown.set(m.seq, li);
}

/** markShownRead moves the read marker up to the newest message shown, while the page is visible. */
function markShownRead(): void {
  if (!open || document.visibilityState !== "visible") return;
  let newest = 0n;
  for (const seq of open.shown.keys()) if (seq > newest) newest = seq;
  if (newest <= open.markedUpTo) return;
  open.markedUpTo = newest;
  client.markRead(open.id, newest).catch((e: unknown) => console.warn("mark read:", errorText(e)));
}
document.addEventListener("visibilitychange", markShownRead);

onSubmit("send", async (data, form) => {
  const text = String(data.get("text") ?? "");
  if (!open || text.trim() === "") return;
  try {
    const sent = await client.send(open.id, text);
    show(sent.message);
    scroller.scrollTop = scroller.scrollHeight;
  } catch (e) {
    (form.elements.namedItem("text") as HTMLInputElement).value = text; // nothing typed is lost
    throw e;
  }
});

// ---- live events ---------------------------------------------------------------------------------

client.on("event", (e: ChatEvent) => {
  const g = groups.get(e.groupId);
  if (!g) return void refreshGroups(); // a group this page does not list yet: the fresh list counts this event
  const counted = e.seq <= g.headSeq; // the last list's unread count already includes it
  if (!counted) g.headSeq = e.seq;
  if (e.type !== "message") {
    // A new name, or the user left or was removed: the list says so (and closes the group if it is gone).
    if (e.type === "groupRenamed" || (e.type === "memberRemoved" && e.member.userId === client.user?.userId)) void refreshGroups();
    return;
  }
  if (open?.id === e.groupId) {
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    show(e.message);
    if (atBottom) scroller.scrollTop = scroller.scrollHeight;
    markShownRead();
  } else if (!counted && e.actor.userId !== client.user?.userId) {
    g.unreadCount += 1;
    g.liveUnread.push(e.seq);
    renderGroups();
  }
});

client.on("groupJoined", () => void refreshGroups());
client.on("readMarker", (m) => {
  // Read on another device: the list's count for that group is stale.
  if (open?.id !== m.groupId) void refreshGroups();
});
client.on("cursorReset", (r) => {
  // Some of the group's history is gone (retention): show what is left.
  if (open?.id === r.groupId) void openGroup(r.groupId);
});

// ---- helpers -------------------------------------------------------------------------------------

/**
 * onSubmit runs `handle` for a form's submissions, one at a time (a submission while one runs is ignored, its input
 * kept). The form is cleared at once; `handle` may put its input back when it fails. Errors show in the alert line.
 */
function onSubmit(id: string, handle: (data: FormData, form: HTMLFormElement) => Promise<void>): void {
  const form = $<HTMLFormElement>(id);
  let busy = false;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (busy) return;
    busy = true;
    const data = new FormData(form);
    form.reset();
    $("group-error").textContent = "";
    $("notice").textContent = "";
    handle(data, form)
      .catch(showError)
      .finally(() => {
        busy = false;
      });
  });
}

function showError(e: unknown): void {
  $("group-error").textContent = errorText(e);
}

/** errorText is what the user reads of an error: the server's message without the status prefix. */
function errorText(e: unknown): string {
  if (e instanceof ConnectError) return e.rawMessage;
  return e instanceof Error ? e.message : String(e);
}

// ---- start ---------------------------------------------------------------------------------------

client.restore().then(
  (restored) => {
    if (restored) signedIn();
  },
  () => undefined,
);
