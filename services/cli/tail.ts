/**
 * tail: one Subscribe stream, printed one line per event until Ctrl-C.
 *
 * - It resumes from the cursors in the session file (unless --new), so a
 *   later tail prints what arrived in between, and after a reconnect the
 *   server replays exactly the events after the last one printed.
 * - UNAVAILABLE, RESOURCE_EXHAUSTED, a dropped connection, a clean end or
 *   three missed heartbeats: reconnect with exponential backoff and jitter
 *   (0.5 s doubling to 30 s; reset once a stream is ready again).
 * - UNAUTHENTICATED (the access token expired): refresh, reconnect at once.
 * - Any other status ends the command with that error.
 * - With group arguments only those groups are printed and only their
 *   cursors saved; the stream still carries all groups.
 */
import { toJsonString } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Group } from "../../gen/chat/v1/group_pb.js";
import type { GroupEvent } from "../../gen/chat/v1/message_pb.js";
import { type SubscribeResponse, SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { hasFlag } from "./args.js";
import { type Context, findGroup, listAllGroups } from "./commands.js";
import { CliError, codeName, describeError, unwrap } from "./errors.js";
import { eventLine, sanitize } from "./format.js";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** CONNECT_TIMEOUT_MS bounds the wait for StreamReady. */
const CONNECT_TIMEOUT_MS = 20_000;
/** SAVE_DELAY_MS batches cursor writes to the session file. */
const SAVE_DELAY_MS = 1_000;

const RETRYABLE: ReadonlySet<Code> = new Set([Code.Unavailable, Code.ResourceExhausted, Code.DeadlineExceeded, Code.Aborted, Code.Unknown]);

interface Cursor {
  seq: bigint;
  epoch: string;
}

/** tail runs until SIGINT/SIGTERM (then resolves) or a non-retryable error (then throws). */
export async function tail(ctx: Context): Promise<void> {
  const api = ctx.api;
  const me = api.session();
  const known = new Map<string, string>(); // group id → name
  const remember = (g: Group) => known.set(g.groupId, g.name);
  const all = await listAllGroups(api);
  all.forEach(remember);
  const only = ctx.args.positionals.length > 0 ? new Set(ctx.args.positionals.map((ref) => findGroup(all, ref).groupId)) : undefined;
  const shown = (groupId: string) => only === undefined || only.has(groupId);

  const cursors = new Map<string, Cursor>();
  const unsaved = new Map<string, Cursor | null>();
  for (const [id, c] of Object.entries(me.cursors)) {
    if (!known.has(id)) unsaved.set(id, null); // no longer a member: forget the cursor
    else if (!hasFlag(ctx.args, "new")) cursors.set(id, { seq: BigInt(c.seq), epoch: c.epoch });
  }
  let saveTimer: NodeJS.Timeout | undefined;
  const save = async () => {
    clearTimeout(saveTimer);
    saveTimer = undefined;
    const changes = new Map(unsaved);
    unsaved.clear();
    await api.updateCursors(changes).catch((e: unknown) => ctx.note(`warning: cursors not saved: ${describeError(e)}`));
  };
  const setCursor = (groupId: string, c: Cursor | null) => {
    if (c === null) cursors.delete(groupId);
    else cursors.set(groupId, c);
    if (!shown(groupId)) return;
    unsaved.set(groupId, c);
    saveTimer ??= setTimeout(() => void save(), SAVE_DELAY_MS);
  };

  const nameOf = async (groupId: string): Promise<string> => {
    const name = known.get(groupId);
    if (name !== undefined) return name;
    try {
      const { group } = await api.groups.getGroup({ groupId });
      if (group) remember(group);
    } catch {
      // Shown by id until the next lookup succeeds.
    }
    return known.get(groupId) ?? groupId;
  };

  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  let attempt = 0;
  let everReady = false;
  let refreshed = false; // refreshed since the last ready: a second UNAUTHENTICATED is final
  try {
    while (!stop.signal.aborted) {
      const conn = new AbortController();
      const abortConn = () => conn.abort();
      stop.signal.addEventListener("abort", abortConn, { once: true });
      let watchdog: NodeJS.Timeout | undefined;
      let stalled = false;
      const arm = (ms: number) => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => {
          stalled = true;
          conn.abort();
        }, ms);
      };
      let idleLimitMs = CONNECT_TIMEOUT_MS;
      let failure: ConnectError;
      try {
        arm(idleLimitMs);
        const request = { cursors: [...cursors].map(([groupId, c]) => ({ groupId, seq: c.seq, epoch: c.epoch })) };
        for await (const item of api.streams.subscribe(request, { signal: conn.signal, timeoutMs: 0 })) {
          arm(idleLimitMs);
          const p = item.payload;
          if (p.case === "ready") {
            // The server's contract: no two items more than the interval apart; twice it (plus slack) is a dead stream.
            idleLimitMs = Math.max(2 * p.value.heartbeatIntervalSeconds * 1000, 5_000) + 2_000;
            arm(idleLimitMs);
            for (const pos of p.value.groups) {
              const at = cursors.get(pos.groupId);
              if (at?.seq !== pos.seq || at.epoch !== pos.epoch) setCursor(pos.groupId, { seq: pos.seq, epoch: pos.epoch });
              await nameOf(pos.groupId);
            }
            const count = only?.size ?? p.value.groups.length;
            if (!(everReady && refreshed)) ctx.note(`${everReady ? "reconnected" : "connected"} to ${api.server} as ${me.username}; tailing ${count} group${count === 1 ? "" : "s"} (Ctrl-C to stop)`);
            everReady = true;
            attempt = 0;
            refreshed = false;
          } else if (p.case === "event") {
            await onEvent(p.value, item);
          } else if (p.case === "cursorReset") {
            const r = p.value;
            setCursor(r.groupId, { seq: r.firstAvailableSeq > 0n ? r.firstAvailableSeq - 1n : 0n, epoch: r.epoch });
            if (shown(r.groupId)) {
              if (ctx.json) ctx.out(toJsonString(SubscribeResponseSchema, item));
              else ctx.note(`[${sanitize(await nameOf(r.groupId))}] events after #${r.requestedSeq} are gone; continuing from #${r.firstAvailableSeq}`);
            }
          } else if (p.case === "groupJoined") {
            setCursor(p.value.groupId, { seq: 0n, epoch: p.value.epoch });
            await nameOf(p.value.groupId);
            if (ctx.json && shown(p.value.groupId)) ctx.out(toJsonString(SubscribeResponseSchema, item));
          }
        }
        failure = new ConnectError("the server ended the stream", Code.Unavailable);
      } catch (e) {
        if (unwrap(e) instanceof CliError) throw unwrap(e); // e.g. the session is gone: reconnecting cannot help
        failure = stalled ? new ConnectError("no heartbeat from the server", Code.Unavailable) : ConnectError.from(e);
      } finally {
        clearTimeout(watchdog);
        stop.signal.removeEventListener("abort", abortConn);
      }
      if (stop.signal.aborted) break;
      await save();
      if (failure.code === Code.Unauthenticated && !refreshed) {
        await api.refresh(); // throws when the session is gone: nothing to reconnect with
        refreshed = true;
        continue;
      }
      if (!RETRYABLE.has(failure.code)) throw failure;
      const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt) * (0.5 + Math.random() / 2);
      attempt++;
      ctx.note(`stream ended (${codeName(failure.code)}: ${failure.rawMessage}); reconnecting in ${(delay / 1000).toFixed(1)}s`);
      await sleep(delay, stop.signal);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await save();
  }

  async function onEvent(e: GroupEvent, item: SubscribeResponse): Promise<void> {
    const at = cursors.get(e.groupId);
    if (at && e.seq <= at.seq) return; // already printed (replay overlap)
    const name = await nameOf(e.groupId);
    if (shown(e.groupId)) ctx.out(ctx.json ? toJsonString(SubscribeResponseSchema, item) : eventLine(name, e));
    if (e.kind.case === "groupRenamed") known.set(e.groupId, e.kind.value.name);
    const leftGroup = e.kind.case === "memberRemoved" && e.kind.value.member?.userId === me.userId;
    setCursor(e.groupId, leftGroup ? null : { seq: e.seq, epoch: at?.epoch ?? "" });
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
