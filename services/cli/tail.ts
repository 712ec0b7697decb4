/**
 * tail: print the live events of the user's groups, one line each, until Ctrl-C. Everything about the connection
 * (resume from the cursors in the session file, reconnect with backoff, heartbeats, token refresh, each event once
 * in order) is @chat/client's; this file prints what the client hands over.
 *
 * - It resumes from the saved cursors (unless --new), so a later tail prints what arrived in between.
 * - With group arguments only those groups are printed and only their cursors saved; the connection still
 *   carries all groups.
 * - It ends with an error only when the session is gone (revoked or expired): log in again.
 */
import { create, toJsonString } from "@bufbuild/protobuf";
import { type ChatEvent, Code, ConnectError, codeName } from "@chat/client/node";
import { CursorResetSchema, GroupJoinedSchema, SubscribeResponseSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { hasFlag } from "./args.js";
import { type Context, findGroup } from "./commands.js";
import { me } from "./context.js";
import { CliError, describeError } from "./errors.js";
import { eventLine, sanitize } from "./format.js";

/** tail runs until SIGINT/SIGTERM (then resolves) or until the session ends (then throws unauthenticated). */
export async function tail(ctx: Context): Promise<void> {
  const { client } = ctx;
  const user = await me(ctx);
  const all = await client.listGroups();
  const names = new Map(all.map((g) => [g.groupId, g.name]));
  const mine = new Set(names.keys());
  const only = ctx.args.positionals.length > 0 ? new Set(ctx.args.positionals.map((ref) => findGroup(all, ref).groupId)) : undefined;
  const shown = (groupId: string) => only === undefined || only.has(groupId);
  ctx.cursors.scope({ only, fresh: hasFlag(ctx.args, "new") });

  const nameOf = async (groupId: string): Promise<string> => {
    const known = names.get(groupId);
    if (known !== undefined) return known;
    try {
      const { group } = await client.clients.groups.getGroup({ groupId });
      if (group) names.set(groupId, group.name);
    } catch {
      // Shown by id until the next lookup succeeds.
    }
    return names.get(groupId) ?? groupId;
  };
  const json = (payload: Parameters<typeof create<typeof SubscribeResponseSchema>>[1]) =>
    ctx.out(toJsonString(SubscribeResponseSchema, create(SubscribeResponseSchema, payload)));

  client.on("event", async (e: ChatEvent) => {
    const name = await nameOf(e.groupId);
    if (shown(e.groupId)) {
      if (ctx.json) json({ payload: { case: "event", value: e.raw } });
      else ctx.out(eventLine(name, e.raw));
    }
    if (e.type === "groupRenamed") names.set(e.groupId, e.name);
    if (e.type === "memberRemoved" && e.member.userId === user.userId) mine.delete(e.groupId);
  });
  client.on("cursorReset", async (r) => {
    if (!shown(r.groupId)) return;
    if (ctx.json) json({ payload: { case: "cursorReset", value: create(CursorResetSchema, r) } });
    else ctx.note(`[${sanitize(await nameOf(r.groupId))}] events after #${r.requestedSeq} are gone; continuing from #${r.firstAvailableSeq}`);
  });
  client.on("groupJoined", async (j) => {
    mine.add(j.groupId);
    await nameOf(j.groupId);
    if (ctx.json && shown(j.groupId)) json({ payload: { case: "groupJoined", value: create(GroupJoinedSchema, j) } });
  });
  client.on("error", (e) => ctx.note(`warning: ${describeError(e)}`));

  let everLive = false;
  let quietReconnect = false;
  client.on("state", ({ state, error, retryInMs }) => {
    if (state === "live") {
      const count = only?.size ?? mine.size;
      if (!quietReconnect) ctx.note(`${everLive ? "reconnected" : "connected"} to ${ctx.server} as ${user.username}; tailing ${count} group${count === 1 ? "" : "s"} (Ctrl-C to stop)`);
      everLive = true;
      quietReconnect = false;
    } else if (state === "reconnecting") {
      const e = error ? ConnectError.from(error) : new ConnectError("the connection ended", Code.Unavailable);
      // An expired access token ends the stream routinely: the client refreshes it and reconnects at once.
      quietReconnect = e.code === Code.Unauthenticated;
      if (!quietReconnect) ctx.note(`stream ended (${codeName(e.code)}: ${e.rawMessage}); reconnecting in ${((retryInMs ?? 0) / 1000).toFixed(1)}s`);
    }
  });

  let signedOut: string | undefined;
  const closed = new Promise<void>((resolve) => {
    client.on("signedOut", ({ reason }) => void (signedOut = reason));
    client.on("state", ({ state }) => void (state === "closed" && resolve()));
  });
  const stop = () => void client.close();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  try {
    await client.start();
    await closed;
    await client.close(); // flushes the cursors
  } finally {
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
  if (signedOut !== undefined) throw new CliError("unauthenticated", `the session expired or was revoked (${signedOut}); run \`chat login <username>\``);
}
