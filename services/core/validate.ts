/**
 * Input validation shared by the use-cases. Each function returns the
 * normalized value or throws ChatError InvalidArgument with a message that
 * names the field and the rule.
 */
import { ChatError } from "./errors.js";
import { isId } from "./ids.js";

const USERNAME_RE = /^[a-z0-9_.-]{3,32}$/;

/** USERNAME_RULE describes valid usernames for error messages and docs. */
export const USERNAME_RULE = "3 to 32 characters of a-z, 0-9, '_', '.', '-'";

/** normalizeUsername lower-cases and checks a username. */
export function normalizeUsername(raw: string): string {
  const username = raw.trim().toLowerCase();
  if (!USERNAME_RE.test(username)) {
    throw new ChatError("InvalidArgument", `username must be ${USERNAME_RULE}`);
  }
  return username;
}

/** checkPassword enforces 8 to 256 characters (the upper bound caps hashing cost). */
export function checkPassword(password: string): string {
  if (password.length < 8) throw new ChatError("InvalidArgument", "password must be at least 8 characters");
  if (password.length > 256) throw new ChatError("InvalidArgument", "password must be at most 256 characters");
  return password;
}

/** checkId checks that `value` has the shape of an id; `field` names it in the error. */
export function checkId(field: string, value: string): string {
  if (value === "") throw new ChatError("InvalidArgument", `${field} is required`);
  if (!isId(value)) throw new ChatError("InvalidArgument", `${field} "${value.slice(0, 64)}" is not a valid id (expected a lower-case UUID)`);
  return value;
}

/** checkGroupName trims and checks a group name: 1 to 100 characters, no control characters. */
export function checkGroupName(raw: string): string {
  const name = raw.trim();
  if (name === "") throw new ChatError("InvalidArgument", "name must not be empty");
  if ([...name].length > 100) throw new ChatError("InvalidArgument", "name must be at most 100 characters");
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
  if (/[\u0000-\u001f\u007f]/.test(name)) throw new ChatError("InvalidArgument", "name must not contain control characters");
  return name;
}

/** checkText checks a message text: not blank, at most `maxBytes` UTF-8 bytes. Returned as sent. */
export function checkText(text: string, maxBytes: number): string {
  if (text.trim() === "") throw new ChatError("InvalidArgument", "text must not be empty");
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > maxBytes) {
    throw new ChatError("InvalidArgument", `text is ${bytes} bytes; the limit is ${maxBytes} bytes (UTF-8)`);
  }
  return text;
}

/** checkClientMessageId checks the idempotency key: 1 to 64 printable ASCII characters. */
export function checkClientMessageId(value: string): string {
  if (value === "") throw new ChatError("InvalidArgument", "client_message_id is required (an idempotency key, e.g. a UUID)");
  if (!/^[\x21-\x7e]{1,64}$/.test(value)) {
    throw new ChatError("InvalidArgument", "client_message_id must be 1 to 64 printable ASCII characters without spaces");
  }
  return value;
}

/** pageSize maps 0 to `fallback` and rejects values above `max`. */
export function pageSize(field: string, value: number, fallback: number, max: number): number {
  if (value === 0) return fallback;
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new ChatError("InvalidArgument", `${field} must be between 1 and ${max} (0 means ${fallback})`);
  }
  return value;
}

/** checkSeq converts a wire seq to a number, rejecting values beyond 2^53. */
export function checkSeq(field: string, value: bigint): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ChatError("InvalidArgument", `${field} is out of range`);
  }
  return Number(value);
}
