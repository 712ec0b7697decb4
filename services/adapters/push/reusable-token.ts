/**
 * A credential that is costly or rate-limited to make (the APNs provider
 * token, the FCM access token), kept and shared by every send while it is
 * fresh.
 */

/** ReusableToken hands out one kept token; see {@link reusableToken}. */
export interface ReusableToken<T> {
  /** get returns the kept token while it is fresh, else the one being made (made now when none is). */
  get(): Promise<T>;
  /** drop forgets the kept token if it is `used` (the service refused it), so the next get makes a new one. */
  drop(used: T): void;
}

/**
 * reusableToken keeps the token `make` returns and reuses it while
 * `fresh(token)` holds. Guarantees: a fresh token is returned without calling
 * make; at most one make runs at a time, and every get while it runs shares
 * it (its token or its error); a make that fails keeps nothing (the kept
 * token stays as it was, and a get after the failure calls make again);
 * drop(used) forgets the kept token only when it is `used`, so a newer token
 * made meanwhile is not thrown away by a send that used the old one.
 */
export function reusableToken<T>(make: () => Promise<T>, fresh: (token: T) => boolean): ReusableToken<T> {
  let kept: T | undefined;
  let making: Promise<T> | undefined;
  return {
    async get() {
      if (kept !== undefined && fresh(kept)) return kept;
      if (making === undefined) {
        const p = make();
        making = p;
        p.then(
          (t) => {
            kept = t;
          },
          () => {},
        ).finally(() => {
          if (making === p) making = undefined;
        });
      }
      return making;
    },
    drop(used) {
      if (kept === used) kept = undefined;
    },
  };
}
