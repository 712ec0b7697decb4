/**
 * The one module that names things on NATS: subjects, the JetStream stream
 * and durable consumers. Nothing else in the code base builds a NATS subject
 * or stream name by hand (STYLE 4; anchor: dendrite `setup/jetstream/streams.go`).
 *
 * Layout, for prefix `chat`:
 *
 * | name                           | what                                              | transport            |
 * |--------------------------------|---------------------------------------------------|----------------------|
 * | `chat.group.<groupId>.<seq>`   | one event of a group's timeline, its slot (GroupEvent, JSON), published to the stream | JetStream (never subscribed) |
 * | `chat.user.<userId>`           | per-user control notices (UserNotice, JSON)       | core NATS only       |
 * | `chat.tail.<groupId>.<seq>`    | each stored timeline event, whole (the stream's republish): what subscribers get | core NATS only |
 * | `CHAT_TIMELINE`                | stream over `chat.group.>` (replay buffer)        | JetStream            |
 * | `persister`                    | the persisters' durable consumer on CHAT_TIMELINE | JetStream            |
 * | `feed-<name>`                  | an EventFeed follower's durable consumer on CHAT_TIMELINE (e.g. `feed-notifier`) | JetStream |
 *
 * The stream and consumer settings, and the functions that create them, are
 * in jetstream-streams.ts: names here, declarations there.
 *
 * Ids are embedded as single subject tokens, so they are validated first: a
 * group or user id must be a lower-case UUID (what the server issues, see
 * `core/ids.ts`). Anything else (dots, `*`, `>`, spaces, upper case) is
 * rejected with ChatError InvalidArgument, so no caller can inject a wildcard
 * or an extra token into a subject.
 */
import { isId } from "../../core/ids.js";
import { ChatError } from "../../core/errors.js";

/** DEFAULT_NATS_PREFIX is the subject prefix of a production deployment. */
export const DEFAULT_NATS_PREFIX = "chat";

/**
 * PREFIX_RE is what a prefix may look like: one subject token of lower-case
 * letters, digits, `_` and `-`, starting with a letter or digit, at most 32
 * characters. Lower case only, so the upper-cased stream name is unique per
 * prefix.
 */
const PREFIX_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/**
 * DurableConsumer is the closed set of fixed-role durable consumers on the
 * timeline stream. Each gets a fixed name (see {@link NatsNames.durable}) so
 * that every instance of that role shares one consumer (and its ack state).
 * EventFeed followers (the notifier) have consumers named by
 * {@link NatsNames.feed} instead.
 */
export type DurableConsumer = "persister";

/** DURABLE_CONSUMERS lists every DurableConsumer once. */
export const DURABLE_CONSUMERS: readonly DurableConsumer[] = ["persister"];

/** FEED_NAME_RE is what an EventFeed follower name may look like: 1-32 of a-z 0-9 _ -, starting with a letter or digit. */
const FEED_NAME_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/**
 * isValidPrefix tells whether `prefix` can be used as a NatsNames prefix (see
 * PREFIX_RE above: one lower-case token, at most 32 characters).
 */
export function isValidPrefix(prefix: string): boolean {
  return PREFIX_RE.test(prefix);
}

/**
 * NatsNames builds every NATS name for one deployment prefix. Two instances
 * with different prefixes share no subject, stream or consumer name, which is
 * what lets test runs on a shared server stay apart (each run passes its own
 * prefix).
 */
export class NatsNames {
  /** prefix is the first token of every subject (e.g. "chat"). */
  readonly prefix: string;
  /**
   * timelineStream is the JetStream stream holding all groups' timelines:
   * `<PREFIX>_TIMELINE` (prefix upper-cased, `-` kept), e.g. `CHAT_TIMELINE`.
   */
  readonly timelineStream: string;
  /**
   * allGroups is the subject filter that matches every group event subject,
   * `<prefix>.group.>`: the timeline stream's only subject.
   */
  readonly allGroups: string;
  /** allUsers is the subject filter matching every user notice subject, `<prefix>.user.>` (never stored). */
  readonly allUsers: string;
  /**
   * allTails is the subject filter matching every tail subject,
   * `<prefix>.tail.>`: the timeline stream republishes each event it stores
   * there, whole (with its stream sequence), so subscribers get only stored
   * events and sequencers learn a group's last event without asking (never
   * stored). The stream leader republishes: at most once and in order per
   * leader term; across a leader change gaps or repeats are possible and are
   * repaired by seq.
   */
  readonly allTails: string;

  /**
   * Creates the names for `prefix` (default "chat"). Throws ChatError
   * InvalidArgument if the prefix is not one lower-case token (see
   * {@link isValidPrefix}).
   */
  constructor(prefix: string = DEFAULT_NATS_PREFIX) {
    if (!isValidPrefix(prefix)) {
      throw new ChatError("InvalidArgument", `invalid NATS prefix ${JSON.stringify(prefix)}: use 1-32 of [a-z0-9_-]`);
    }
    this.prefix = prefix;
    this.timelineStream = `${prefix.toUpperCase()}_TIMELINE`;
    this.allGroups = `${prefix}.group.>`;
    this.allUsers = `${prefix}.user.>`;
    this.allTails = `${prefix}.tail.>`;
  }

  /**
   * slot is the subject of one event of a group's timeline,
   * `<prefix>.group.<groupId>.<seq>`: each event has a subject of its own,
   * written with `Nats-Expected-Last-Subject-Sequence: 0`, so the timeline
   * stream stores at most one event per (group, seq), also on a replicated
   * stream under racing writers (on nats-server 2.9 a non-zero expected
   * subject sequence is not exclusive on R3; expected 0 is:
   * jetstream-cluster.int.spec.ts). Nobody subscribes to it: it also carries
   * publishes JetStream refused; subscribers use {@link tail}. Throws
   * ChatError InvalidArgument unless `groupId` is a lower-case UUID and `seq`
   * a positive safe integer.
   */
  slot(groupId: string, seq: number): string {
    return `${this.prefix}.group.${token("group id", groupId)}.${positiveSeq(seq)}`;
  }

  /**
   * group is the filter matching every event subject of one group,
   * `<prefix>.group.<groupId>.*` (its slots): for a group's last event
   * (direct get `last_by_subj`) and consumers of one group. Throws ChatError
   * InvalidArgument unless `groupId` is a lower-case UUID.
   */
  group(groupId: string): string {
    return `${this.prefix}.group.${token("group id", groupId)}.*`;
  }

  /**
   * user is the subject of one user's notices, `<prefix>.user.<userId>`. Core
   * NATS only (ephemeral: not in any stream). Throws ChatError InvalidArgument
   * unless `userId` is a lower-case UUID.
   */
  user(userId: string): string {
    return `${this.prefix}.user.${token("user id", userId)}`;
  }

  /**
   * groupIdOf returns the group id of an event subject built by {@link slot}
   * with this prefix, or undefined for any other subject.
   */
  groupIdOf(subject: string): string | undefined {
    return slotOf(`${this.prefix}.group.`, subject)?.groupId;
  }

  /**
   * slotOf returns the group id and seq of an event subject built by
   * {@link slot} with this prefix, or undefined for any other subject.
   */
  slotOf(subject: string): { readonly groupId: string; readonly seq: number } | undefined {
    return slotOf(`${this.prefix}.group.`, subject);
  }

  /**
   * tail is the filter of the subjects on which the timeline stream
   * republishes each event of a group it stored, whole (its headers plus
   * `Nats-Sequence`), `<prefix>.tail.<groupId>.*` (core NATS only; one
   * subject per event, {@link tailSlot}): what subscribers of
   * the group's events listen to. The stream leader republishes as it
   * applies each entry: at most once and in stream order per leader term;
   * across a leader change an event may be missing or repeated (subscribers
   * repair by seq). Throws ChatError InvalidArgument unless `groupId` is a
   * lower-case UUID.
   */
  tail(groupId: string): string {
    return `${this.prefix}.tail.${token("group id", groupId)}.*`;
  }

  /**
   * tailSlot is the subject on which the timeline stream republishes the
   * event stored on {@link slot}(groupId, seq): `<prefix>.tail.<groupId>.<seq>`
   * (republish src `<prefix>.group.>`, dest `<prefix>.tail.>`; core NATS
   * only). The server builds these subjects; tailSlot names one for whoever
   * must recognise or play it (tests). Throws ChatError InvalidArgument
   * unless `groupId` is a lower-case UUID and `seq` a positive safe integer.
   */
  tailSlot(groupId: string, seq: number): string {
    return `${this.prefix}.tail.${token("group id", groupId)}.${positiveSeq(seq)}`;
  }

  /**
   * groupIdOfTail returns the group id of a republished event's subject
   * (`<prefix>.tail.<groupId>.<seq>`) with this prefix, or undefined for any
   * other subject.
   */
  groupIdOfTail(subject: string): string | undefined {
    return slotOf(`${this.prefix}.tail.`, subject)?.groupId;
  }

  /**
   * msgId is the JetStream `Nats-Msg-Id` of a group event, `<groupId>:<seq>`:
   * a re-publish of the same event within the stream's duplicate window is
   * stored once. Throws ChatError InvalidArgument for a bad id or a seq that
   * is not a positive safe integer.
   */
  msgId(groupId: string, seq: number): string {
    if (!Number.isSafeInteger(seq) || seq < 1) {
      throw new ChatError("InvalidArgument", `invalid seq ${seq}: must be a positive integer`);
    }
    return `${token("group id", groupId)}:${seq}`;
  }

  /**
   * durable is the name of a durable consumer on {@link timelineStream}: the
   * role itself (e.g. `notifier`). The stream is already per prefix, so the
   * name needs no prefix; every process of that role binds to the same one.
   */
  durable(consumer: DurableConsumer): string {
    return consumer;
  }

  /**
   * feed is the name of the durable consumer of the EventFeed follower
   * `name` on {@link timelineStream}: `feed-<name>` (e.g. `feed-notifier`);
   * every instance following that name binds to it. Like {@link durable} it
   * needs no prefix (the stream is per prefix), and it cannot collide with a
   * {@link DurableConsumer}. Throws ChatError InvalidArgument unless `name`
   * is 1-32 of a-z 0-9 _ - starting with a letter or digit.
   */
  feed(name: string): string {
    if (!FEED_NAME_RE.test(name)) {
      throw new ChatError("InvalidArgument", `invalid feed follower name ${JSON.stringify(name)}: use 1-32 of [a-z0-9_-]`);
    }
    return `feed-${name}`;
  }
}

/** slotOf parses `<head><groupId>.<seq>`; undefined unless the id is a lower-case UUID and seq a positive decimal without leading zeros. */
function slotOf(head: string, subject: string): { readonly groupId: string; readonly seq: number } | undefined {
  if (!subject.startsWith(head)) return undefined;
  const rest = subject.slice(head.length);
  const dot = rest.indexOf(".");
  if (dot < 0) return undefined;
  const groupId = rest.slice(0, dot);
  const seqText = rest.slice(dot + 1);
  if (!isId(groupId) || !/^[1-9][0-9]{0,15}$/.test(seqText)) return undefined;
  const seq = Number(seqText);
  return Number.isSafeInteger(seq) ? { groupId, seq } : undefined;
}

/** positiveSeq returns `seq` if it is a positive safe integer; throws ChatError InvalidArgument otherwise. */
function positiveSeq(seq: number): number {
  if (!Number.isSafeInteger(seq) || seq < 1) {
    throw new ChatError("InvalidArgument", `invalid seq ${seq}: must be a positive integer`);
  }
  return seq;
}

/** token returns `id` if it is safe as one subject token (a lower-case UUID); throws ChatError InvalidArgument otherwise. */
function token(what: string, id: string): string {
  if (!isId(id)) throw new ChatError("InvalidArgument", `invalid ${what}: must be a lower-case UUID`);
  return id;
}
