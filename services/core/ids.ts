import { v7 as uuidv7 } from "uuid";

/** newId returns a fresh UUIDv7: unique, lower case, sorting by creation time. */
export function newId(): string {
  return uuidv7();
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** isId tells whether s has the shape of an id this server issues (a lower-case UUID). */
export function isId(s: string): boolean {
  return UUID_RE.test(s);
}
