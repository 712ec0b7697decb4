/**
 * Peer wraps a forked load-generator process: send a command, wait (with a
 * timeout) for a reply of a given type; an "error" reply or the process's
 * exit rejects every waiter.
 */
import type { Managed } from "./children.js";

interface Waiter {
  type: string;
  resolve: (msg: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class Peer<In extends { type: string }, Out extends { type: string }> {
  private readonly inbox: Out[] = [];
  private readonly waiters: Waiter[] = [];
  private dead: Error | undefined;
  /** onOther sees messages no one waits for (e.g. progress). */
  onOther: (msg: Out) => void = () => {};

  constructor(readonly proc: Managed) {
    proc.child.on("message", (msg: Out) => {
      if (msg.type === "error") {
        this.fail(new Error(`${proc.name}: ${(msg as unknown as { message: string }).message}`));
        return;
      }
      const i = this.waiters.findIndex((w) => w.type === msg.type);
      if (i >= 0) {
        const [w] = this.waiters.splice(i, 1);
        if (w) {
          clearTimeout(w.timer);
          w.resolve(msg);
        }
        return;
      }
      if (msg.type === "progress") this.onOther(msg);
      else this.inbox.push(msg);
    });
    proc.child.once("exit", (code, signal) => this.fail(new Error(`${proc.name} exited (code ${code}, signal ${signal}):\n${proc.tail()}`)));
  }

  private fail(err: Error): void {
    this.dead ??= err;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  get pid(): number {
    return this.proc.pid;
  }

  send(msg: In): void {
    if (this.dead) throw this.dead;
    this.proc.child.send(msg);
  }

  /** waitFor resolves with the next message of `type` (already received or to come). */
  waitFor<T extends Out["type"]>(type: T, timeoutMs: number): Promise<Extract<Out, { type: T }>> {
    const i = this.inbox.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0] as Extract<Out, { type: T }>);
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const j = this.waiters.indexOf(w);
        if (j >= 0) this.waiters.splice(j, 1);
        reject(new Error(`${this.proc.name}: no "${type}" within ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      const w: Waiter = { type, resolve: resolve as (m: unknown) => void, reject, timer };
      this.waiters.push(w);
    });
  }

  /** request sends a command and waits for the reply of `type`. */
  request<T extends Out["type"]>(msg: In, type: T, timeoutMs: number): Promise<Extract<Out, { type: T }>> {
    if (this.dead) return Promise.reject(this.dead);
    const p = this.waitFor(type, timeoutMs);
    this.send(msg);
    return p;
  }
}
