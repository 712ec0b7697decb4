/**
 * Text output. Everything that comes from other users (message texts,
 * group names) goes through `sanitize`, so a message cannot move the
 * cursor, recolour the terminal or forge extra lines.
 */
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { MemberRole } from "../../gen/chat/v1/group_pb.js";
import type { GroupEvent, Message } from "../../gen/chat/v1/message_pb.js";

// C0 and C1 controls, DEL, line/paragraph separators and bidi overrides; tab is kept.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNSAFE = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** sanitize escapes control characters (newline → `\n`, ESC → `\x1b`, ...) so the text prints as one harmless line. */
export function sanitize(text: string): string {
  return text.replace(UNSAFE, (ch) => {
    if (ch === "\n") return "\\n";
    if (ch === "\r") return "\\r";
    const code = ch.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/** roleName is "member", "admin", "owner" (or "unspecified"). */
export function roleName(role: MemberRole): string {
  return (MemberRole[role] ?? "unspecified").toLowerCase();
}

/** time renders a timestamp as ISO 8601 (UTC), or "-" when absent. */
export function time(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString() : "-";
}

/** table pads columns to line up; the first row is the header. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("  ")).join("\n");
}

/** messageLine renders a message as `[group #seq] username: text`. */
export function messageLine(groupName: string, m: Message): string {
  return `[${sanitize(groupName)} #${m.seq}] ${m.sender?.username ?? "?"}: ${sanitize(m.text)}`;
}

/** eventLine renders a timeline event as one line: a message, or a description of a membership change. */
export function eventLine(groupName: string, e: GroupEvent): string {
  const prefix = `[${sanitize(groupName)} #${e.seq}]`;
  const actor = e.actor?.username ?? "?";
  const k = e.kind;
  switch (k.case) {
    case "message":
      return messageLine(groupName, k.value);
    case "memberAdded": {
      const who = k.value.member?.username ?? "?";
      if (who === actor) {
        return k.value.role === MemberRole.OWNER && e.seq === 1n ? `${prefix} ${actor} created the group` : `${prefix} ${who} joined as ${roleName(k.value.role)}`;
      }
      return `${prefix} ${actor} added ${who} as ${roleName(k.value.role)}`;
    }
    case "memberRemoved": {
      const who = k.value.member?.username ?? "?";
      return who === actor ? `${prefix} ${who} left` : `${prefix} ${actor} removed ${who}`;
    }
    case "memberRoleChanged":
      return `${prefix} ${actor} made ${k.value.member?.username ?? "?"} ${roleName(k.value.role)}`;
    case "groupRenamed":
      return `${prefix} ${actor} renamed the group to "${sanitize(k.value.name)}"`;
    case undefined:
      return `${prefix} (unknown event)`;
  }
}
