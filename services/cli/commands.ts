/** The commands other than tail: each resolves names, makes its calls through the SDK client and prints the outcome. */
import { type JsonValue, create, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { MemberRole, type SignedInUser } from "@chat/client/node";
import { UserSchema } from "../../gen/chat/v1/common_pb.js";
import { type Group, GroupSchema, MemberSchema } from "../../gen/chat/v1/group_pb.js";
import { AddMemberResponseSchema, MarkReadResponseSchema, RemoveMemberResponseSchema } from "../../gen/chat/v1/group_service_pb.js";
import { ListMessagesResponseSchema, SendMessageResponseSchema } from "../../gen/chat/v1/message_service_pb.js";
import { flag, flagValues, seqFlag } from "./args.js";
import { type Context, me } from "./context.js";
import { CliError, UsageError, describeError } from "./errors.js";
import { messageLine, roleName, sanitize, table, time } from "./format.js";
import { promptHidden } from "./prompt.js";

export type { Context };

function userJson(u: SignedInUser): JsonValue {
  return toJson(UserSchema, create(UserSchema, { userId: u.userId, username: u.username, ...(u.createdAt ? { createdAt: timestampFromDate(u.createdAt) } : {}) }));
}

function printJson(ctx: Context, value: JsonValue): void {
  ctx.out(JSON.stringify(value, null, 2));
}

/** password takes --password, then CHAT_PASSWORD, then asks on the terminal (twice when confirming). */
async function password(ctx: Context, confirm: boolean): Promise<string> {
  const given = flag(ctx.args, "password") ?? ctx.env.CHAT_PASSWORD;
  if (given !== undefined && given !== "") return given;
  const first = await promptHidden("Password: ");
  if (first === undefined) throw new UsageError("no password: pass --password, set CHAT_PASSWORD, or run on a terminal to be asked");
  if (confirm && (await promptHidden("Password (again): ")) !== first) throw new CliError("invalid_argument", "the passwords differ");
  return first;
}

/** register creates the account and stores the session. */
export async function register(ctx: Context): Promise<void> {
  const username = ctx.args.positionals[0] ?? "";
  const user = await ctx.client.register(username, await password(ctx, true));
  if (ctx.json) return printJson(ctx, userJson(user));
  ctx.out(`registered and logged in as ${user.username} (user id ${user.userId})`);
}

/** login stores a new session for an existing account (the tail cursors of the same user are kept). */
export async function login(ctx: Context): Promise<void> {
  const username = ctx.args.positionals[0] ?? "";
  const user = await ctx.client.login(username, await password(ctx, false));
  if (ctx.json) return printJson(ctx, userJson(user));
  ctx.out(`logged in as ${user.username} (user id ${user.userId})`);
}

/** logout revokes the session on the server and forgets it (also when the server cannot be reached). */
export async function logout(ctx: Context): Promise<void> {
  const user = await me(ctx);
  try {
    await ctx.client.logout();
  } catch (e) {
    throw new CliError("unavailable", `forgot the local session, but the server did not revoke it (${describeError(e)})`);
  }
  ctx.out(`logged out ${user.username}`);
}

/** whoami prints the session's user (no call to the server). */
export async function whoami(ctx: Context): Promise<void> {
  const user = await me(ctx);
  if (ctx.json) {
    const s = await ctx.tokens.load();
    const refreshTokenExpiresAt = s ? new Date(s.refreshTokenExpiresAt).toISOString() : "";
    return printJson(ctx, { username: user.username, userId: user.userId, server: ctx.server, refreshTokenExpiresAt });
  }
  ctx.out(`${user.username} (user id ${user.userId}) on ${ctx.server}`);
}

/** findGroup picks a group by exact id, else by exact name; throws not_found or, for a name shared by several groups, invalid_argument. */
export function findGroup(groups: readonly Group[], ref: string): Group {
  const byId = groups.find((g) => g.groupId === ref);
  if (byId) return byId;
  const byName = groups.filter((g) => g.name === ref);
  if (byName.length === 1 && byName[0]) return byName[0];
  if (byName.length > 1) {
    throw new CliError("invalid_argument", `${byName.length} of your groups are named "${sanitize(ref)}"; name one by id: ${byName.map((g) => g.groupId).join(", ")}`);
  }
  throw new CliError("not_found", `you have no group with the id or name "${sanitize(ref)}" (see \`chat groups\`)`);
}

/** resolveGroup finds one of the caller's groups by id or exact name. */
export async function resolveGroup(ctx: Context, ref: string): Promise<Group> {
  await me(ctx);
  return findGroup(await ctx.client.listGroups(), ref);
}

/** groups lists the caller's groups with their unread counts (messages of others after the read marker). */
export async function groups(ctx: Context): Promise<void> {
  await me(ctx);
  const list = await ctx.client.listGroups();
  if (ctx.json) return printJson(ctx, list.map((g) => toJson(GroupSchema, g)));
  if (list.length === 0) return ctx.note("no groups yet; create one with `chat create-group <name>`");
  ctx.out(
    table([
      ["NAME", "ROLE", "MEMBERS", "UNREAD", "LAST SEQ", "ID"],
      ...list.map((g) => [sanitize(g.name), roleName(g.myRole), String(g.memberCount), unreadText(g.unreadCount), String(g.headSeq), g.groupId]),
    ]),
  );
}

/** unreadText shows an unread count; the server counts at most UNREAD_CAP, which means that many or more. */
export function unreadText(count: number): string {
  return count >= UNREAD_CAP ? `${UNREAD_CAP}+` : String(count);
}

/** UNREAD_CAP is the server's cap on Group.unread_count (999 means 999 or more). */
const UNREAD_CAP = 999;

/** read marks a group read up to its newest event (its head when listed). */
export async function read(ctx: Context): Promise<void> {
  const group = await resolveGroup(ctx, ctx.args.positionals[0] ?? "");
  const res = await ctx.client.clients.groups.markRead({ groupId: group.groupId, seq: group.headSeq });
  if (ctx.json) return printJson(ctx, toJson(MarkReadResponseSchema, res));
  ctx.out(`marked ${sanitize(group.name)} read up to #${res.lastReadSeq}`);
}

/** createGroup creates a group owned by the caller with the --member users. */
export async function createGroup(ctx: Context): Promise<void> {
  await me(ctx);
  const name = ctx.args.positionals[0] ?? "";
  const { group, notAddedUsernames } = await ctx.client.clients.groups.createGroup({ name, memberUsernames: [...flagValues(ctx.args, "member")] });
  if (!group) throw new CliError("internal", "CreateGroup answered without the group");
  for (const u of notAddedUsernames) ctx.note(`${sanitize(u)} was not added: they reached the most groups a user may be in meanwhile`);
  if (ctx.json) return printJson(ctx, toJson(GroupSchema, group));
  const n = group.memberCount;
  ctx.out(`created group ${sanitize(group.name)} (id ${group.groupId}) with ${n} member${n === 1 ? "" : "s"}`);
}

const ROLES: Readonly<Record<string, MemberRole>> = { member: MemberRole.MEMBER, admin: MemberRole.ADMIN, owner: MemberRole.OWNER };

/** addMember adds a user by username, as member unless --role says otherwise. */
export async function addMember(ctx: Context): Promise<void> {
  const [ref = "", username = ""] = ctx.args.positionals;
  const roleText = flag(ctx.args, "role") ?? "member";
  const role = ROLES[roleText];
  if (role === undefined) throw new UsageError(`--role must be member, admin or owner, got "${roleText}"`);
  const group = await resolveGroup(ctx, ref);
  const res = await ctx.client.clients.groups.addMember({ groupId: group.groupId, user: { case: "username", value: username }, role });
  if (ctx.json) return printJson(ctx, toJson(AddMemberResponseSchema, res));
  ctx.out(`added ${res.member?.user?.username ?? username} to ${sanitize(group.name)} as ${roleName(res.member?.role ?? role)} (#${res.seq})`);
}

/** removeMember removes a member named by username or user id. */
export async function removeMember(ctx: Context): Promise<void> {
  const [ref = "", who = ""] = ctx.args.positionals;
  const group = await resolveGroup(ctx, ref);
  const members = await ctx.client.listMembers(group.groupId);
  const member = members.find((m) => m.user?.userId === who) ?? members.find((m) => m.user?.username === who.toLowerCase());
  if (!member?.user) throw new CliError("not_found", `${sanitize(who)} is not a member of ${sanitize(group.name)}`);
  const res = await ctx.client.clients.groups.removeMember({ groupId: group.groupId, userId: member.user.userId });
  if (ctx.json) return printJson(ctx, toJson(RemoveMemberResponseSchema, res));
  ctx.out(`removed ${member.user.username} from ${sanitize(group.name)} (#${res.seq})`);
}

/** leave removes the caller from a group and forgets its tail cursor. */
export async function leave(ctx: Context): Promise<void> {
  const user = await me(ctx);
  const group = await resolveGroup(ctx, ctx.args.positionals[0] ?? "");
  const res = await ctx.client.clients.groups.removeMember({ groupId: group.groupId, userId: user.userId });
  ctx.cursors.set(user.userId, group.groupId, null);
  await ctx.cursors.flush();
  if (ctx.json) return printJson(ctx, toJson(RemoveMemberResponseSchema, res));
  ctx.out(`left ${sanitize(group.name)} (#${res.seq})`);
}

/** members lists a group's members. */
export async function members(ctx: Context): Promise<void> {
  const group = await resolveGroup(ctx, ctx.args.positionals[0] ?? "");
  const list = await ctx.client.listMembers(group.groupId);
  if (ctx.json) return printJson(ctx, list.map((m) => toJson(MemberSchema, m)));
  ctx.out(
    table([
      ["USERNAME", "ROLE", "JOINED", "USER ID"],
      ...list.map((m) => [m.user?.username ?? "?", roleName(m.role), time(m.joinedAt), m.user?.userId ?? "?"]),
    ]),
  );
}

/** send sends the remaining arguments, joined by spaces; the SDK retries transient failures with the same client_message_id. */
export async function send(ctx: Context): Promise<void> {
  const [ref = "", ...words] = ctx.args.positionals;
  const text = words.join(" ");
  if (text.trim() === "") throw new UsageError("send needs a non-empty text");
  const group = await resolveGroup(ctx, ref);
  const res = await ctx.client.send(group.groupId, text);
  if (ctx.json) return printJson(ctx, toJson(SendMessageResponseSchema, res.raw));
  ctx.out(`sent #${res.seq}${res.duplicate ? " (duplicate)" : ""}`);
}

/** history prints one page of messages, oldest first, and says on stderr how to page on. */
export async function history(ctx: Context): Promise<void> {
  const before = seqFlag(ctx.args, "before");
  const after = seqFlag(ctx.args, "after");
  const limit = seqFlag(ctx.args, "limit");
  if (before !== undefined && after !== undefined) throw new UsageError("give --before or --after, not both");
  if (limit !== undefined && (limit < 1n || limit > 200n)) throw new UsageError("--limit must be from 1 to 200");
  const ref = ctx.args.positionals[0] ?? "";
  const group = await resolveGroup(ctx, ref);
  const anchor =
    before !== undefined ? ({ case: "beforeSeq", value: before } as const) : after !== undefined ? ({ case: "afterSeq", value: after } as const) : ({ case: undefined } as const);
  const res = await ctx.client.clients.messages.listMessages({ groupId: group.groupId, limit: Number(limit ?? 0n), anchor });
  if (ctx.json) return printJson(ctx, toJson(ListMessagesResponseSchema, res));
  for (const m of res.messages) ctx.out(messageLine(group.name, m));
  if (res.messages.length === 0) ctx.note("no messages");
  const first = res.messages[0];
  const last = res.messages[res.messages.length - 1];
  if (res.hasMore && after !== undefined && last) ctx.note(`more: chat history ${quote(ref)} --after ${last.seq}`);
  if (res.hasMore && after === undefined && first) ctx.note(`older: chat history ${quote(ref)} --before ${first.seq}`);
}

function quote(s: string): string {
  return /^[\w.@%+=:,/-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
