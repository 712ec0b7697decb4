/**
 * ErrorKind is the closed set of failures the core reports. Each maps to
 * exactly one gRPC status in `rpc/errors.ts`; adding a kind means adding
 * its mapping there (the compiler enforces it).
 */
export type ErrorKind =
  | "InvalidArgument"
  | "NotFound"
  | "AlreadyExists"
  | "PermissionDenied"
  | "Unauthenticated"
  | "FailedPrecondition"
  | "ResourceExhausted"
  | "Unavailable"
  | "Internal";

/** ERROR_KINDS lists every ErrorKind once (for exhaustive tests). */
export const ERROR_KINDS: readonly ErrorKind[] = [
  "InvalidArgument",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "Unauthenticated",
  "FailedPrecondition",
  "ResourceExhausted",
  "Unavailable",
  "Internal",
];

/**
 * ChatError is the only error the core throws on purpose. Its message is
 * written for a client developer and is safe to return to the client; put
 * anything internal in `cause`.
 */
export class ChatError extends Error {
  override readonly name = "ChatError";
  /**
   * retryAfterMs, when set, tells a rate-limited client how long to wait.
   */
  readonly retryAfterMs: number | undefined;

  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: ErrorOptions & { retryAfterMs?: number },
  ) {
    super(message, options);
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/** isChatError narrows unknown values to ChatError, optionally of one kind. */
export function isChatError(e: unknown, kind?: ErrorKind): e is ChatError {
  return e instanceof ChatError && (kind === undefined || e.kind === kind);
}

/** GROUP_NOT_FOUND is the one answer for a group that does not exist or that
 * the caller does not belong to, so membership cannot be probed. */
export function groupNotFound(groupId: string): ChatError {
  return new ChatError("NotFound", `group ${groupId} not found (or you are not a member)`);
}

/**
 * tooManyGroups is the answer when a user already in `max` groups would join
 * another (MAX_GROUPS_PER_USER): FailedPrecondition, since retrying cannot
 * help until the user leaves a group. `user` is the joining user (or users:
 * CreateGroup names every listed member at the limit at once), or undefined
 * when that is the caller (creating a group).
 */
export function tooManyGroups(user: { readonly username: string } | readonly { readonly username: string }[] | undefined, max: number): ChatError {
  const limit = `the most a user may be in (MAX_GROUPS_PER_USER)`;
  if (user === undefined) {
    return new ChatError("FailedPrecondition", `you are already in ${max} groups, ${limit}; leave a group before creating another`);
  }
  const users = "username" in user ? [user] : user;
  const names = users.map((u) => u.username);
  const who = names.length === 1 ? `${names[0]} is` : `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are each`;
  return new ChatError("FailedPrecondition", `${who} already in ${max} groups, ${limit}; they must leave a group before they can be added`);
}

/**
 * tooManyDevices is the answer when a user with `max` registered push devices
 * (MAX_DEVICES_PER_USER) registers another: FailedPrecondition, since
 * retrying cannot help until a device is unregistered.
 */
export function tooManyDevices(max: number): ChatError {
  return new ChatError("FailedPrecondition", `you already have ${max} push devices registered, the most a user may have (MAX_DEVICES_PER_USER); unregister one first`);
}
