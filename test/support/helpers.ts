import net from "node:net";
import { ConnectError } from "@connectrpc/connect";
import type { Message } from "../../gen/chat/v1/message_pb.js";
import type { Clients } from "./test-server.js";

/** freePort returns a port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (typeof address !== "object" || !address) throw new Error("no address");
  return address.port;
}

/** sendMany sends `n` messages "<prefix> i" to a group, `concurrency` at a time, and returns them in seq order. */
export async function sendMany(c: Clients, groupId: string, n: number, opts: { concurrency?: number; prefix?: string; text?: string } = {}): Promise<Message[]> {
  const concurrency = opts.concurrency ?? 20;
  const prefix = opts.prefix ?? `m-${Math.random().toString(36).slice(2)}`;
  const out: Message[] = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const res = await c.messages.sendMessage({ groupId, text: opts.text ?? `${prefix} ${i}`, clientMessageId: `${prefix}-${i}` });
      if (!res.message) throw new Error("no message in response");
      out.push(res.message);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  return out.sort((a, b) => Number(a.seq - b.seq));
}

/** range returns [from, from+1, ..., to]. */
export function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
}

/** codeOf returns the Connect code of a rejected promise's error (or throws if it resolved). */
export async function codeOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e).code;
  }
  throw new Error("expected the call to fail");
}

/** historySnapshot reads every page a client can ask for — the newest, and before and after each seq up to `head` + 1 — as plain JSON. */
export async function historySnapshot(c: Clients, groupId: string, head: number, limits: readonly number[] = [1, 3, 50]): Promise<unknown[]> {
  const pages: unknown[] = [];
  const read = async (anchor: Parameters<Clients["messages"]["listMessages"]>[0]["anchor"], limit: number) => {
    const page = await c.messages.listMessages({ groupId, limit, ...(anchor ? { anchor } : {}) });
    pages.push({
      anchor,
      limit,
      hasMore: page.hasMore,
      headSeq: page.headSeq,
      messages: page.messages.map((m) => [m.seq, m.messageId, m.text, m.sender?.userId, m.clientMessageId, String(m.sentAt?.seconds), m.sentAt?.nanos]),
    });
  };
  for (const limit of limits) {
    await read(undefined, limit);
    for (let s = 0n; s <= BigInt(head) + 1n; s++) {
      await read({ case: "beforeSeq", value: s + 1n }, limit);
      await read({ case: "afterSeq", value: s }, limit);
    }
  }
  return pages;
}

/** until polls `cond` every `everyMs` until it holds, failing with "timed out waiting for <what>" after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 15_000, everyMs = 20): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
