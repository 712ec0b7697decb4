/** A small typed event emitter whose emit awaits each handler in turn. */

/** Handler is a listener; it may return a promise, which the emitter awaits. */
export type Handler<T> = (value: T) => unknown;

/** Emitter calls the handlers registered for a name in registration order. */
export class Emitter<M extends object> {
  private readonly handlers = new Map<keyof M, Set<Handler<never>>>();

  /** on registers a handler and returns a function that removes it. */
  on<K extends keyof M>(name: K, handler: Handler<M[K]>): () => void {
    let set = this.handlers.get(name);
    if (!set) this.handlers.set(name, (set = new Set()));
    set.add(handler as Handler<never>);
    return () => void set.delete(handler as Handler<never>);
  }

  /** count is the number of handlers of `name`. */
  count(name: keyof M): number {
    return this.handlers.get(name)?.size ?? 0;
  }

  /**
   * emit calls each handler of `name` in turn, awaiting each. A handler that throws does not stop the others;
   * its error goes to `onError`.
   */
  async emit<K extends keyof M>(name: K, value: M[K], onError: (e: unknown) => void): Promise<void> {
    const set = this.handlers.get(name);
    if (!set) return;
    for (const h of [...set]) {
      try {
        await (h as Handler<M[K]>)(value);
      } catch (e) {
        onError(e);
      }
    }
  }
}
