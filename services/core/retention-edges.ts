/**
 * RetentionEdges: each group's oldest retained event, read from the store
 * and remembered for at most `maxAgeMs` (default 10 s), and never past the
 * moment that event itself leaves retention.
 *
 * Why it can be remembered: events below the edge are past retention and
 * never come back, and the edge event stays retained until its
 * `retainedUntil`, so the store keeps answering the same seq. The one way the
 * edge can move down is a gap below it being filled late (on Cassandra the
 * persister writes an event whose writer died, within seconds): `maxAgeMs`
 * bounds how long a page may still start above such an event. A group with
 * nothing retained is never remembered (its next event becomes the edge).
 * At most `maxGroups` edges are kept; past that the oldest-remembered is
 * forgotten.
 */
import type { Clock, GroupStore, RetainedEdge } from "./ports.js";

export class RetentionEdges {
  /** Each remembered edge with the time until which it is used. */
  private readonly edges = new Map<string, { seq: number; until: number }>();

  constructor(
    private readonly deps: {
      store: Pick<GroupStore, "firstRetained">;
      clock: Clock;
      maxGroups?: number;
      maxAgeMs?: number;
    },
  ) {}

  /** firstRetainedSeq returns the group's oldest retained seq, or 0 if none is retained. */
  async firstRetainedSeq(groupId: string): Promise<number> {
    const known = this.edges.get(groupId);
    if (known && this.deps.clock.now() <= known.until) return known.seq;
    if (known) this.edges.delete(groupId);
    return (await this.read(groupId))?.seq ?? 0;
  }

  /**
   * read asks the store. Concurrent misses do not share a read: one that
   * started before a caller's own acknowledged write could answer "nothing
   * retained" for a group that now holds that write.
   */
  private async read(groupId: string): Promise<RetainedEdge | undefined> {
    const edge = await this.deps.store.firstRetained(groupId);
    if (edge) this.remember(groupId, edge);
    return edge;
  }

  private remember(groupId: string, edge: RetainedEdge): void {
    if (this.edges.size >= (this.deps.maxGroups ?? 100_000)) {
      const oldest = this.edges.keys().next().value;
      if (oldest !== undefined) this.edges.delete(oldest);
    }
    const until = Math.min(edge.retainedUntil, this.deps.clock.now() + (this.deps.maxAgeMs ?? 10_000));
    this.edges.set(groupId, { seq: edge.seq, until });
  }
}
