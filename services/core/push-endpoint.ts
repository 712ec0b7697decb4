/**
 * The Web Push endpoint policy (issue 14): a subscription's endpoint is a URL
 * the client chose, and the server POSTs to it, so by default it must be an
 * https URL on a public host. `checkPushEndpoint` is the check at
 * registration (and again before each send); the Web Push sender adds the
 * check of the addresses the host name resolves to (`isPublicAddress`).
 */
import { isIP } from "node:net";

/**
 * PushEndpointPolicy is the configured Web Push endpoint policy.
 * `allowPrivate` (documented setting, off by default) lets endpoints be
 * plain http:// and on loopback, private, link-local or otherwise non-public
 * hosts: for tests' loopback receivers and private deployments.
 */
export interface PushEndpointPolicy {
  readonly allowPrivate: boolean;
}

/** MAX_PUSH_ENDPOINT_LENGTH is the longest endpoint URL accepted, in UTF-16 code units of the string as sent. */
export const MAX_PUSH_ENDPOINT_LENGTH = 2048;

/** Special-use name suffixes that never name a public push service (RFC 6761 localhost, RFC 6762 .local, RFC 8375 home.arpa, ICANN .internal). */
const PRIVATE_NAME_SUFFIXES = ["localhost", "local", "home.arpa", "internal"];

/**
 * checkPushEndpoint returns undefined if `url` is acceptable as a Web Push
 * endpoint under `policy`, else one sentence a client developer can act on.
 * Rules: at most MAX_PUSH_ENDPOINT_LENGTH characters, no whitespace or
 * control characters; an absolute URL; https (http too when
 * `allowPrivate`); no user name or password; a host. Unless `allowPrivate`:
 * an IP-literal host must be public (isPublicAddress; the URL parser has
 * already turned forms like `0x7f.1` or `2130706433` into dotted decimal),
 * and a name must have a dot and not be (under) localhost, .local, home.arpa
 * or .internal. A name's addresses are not looked up here: the sender checks
 * them when it connects.
 */
export function checkPushEndpoint(url: string, policy: PushEndpointPolicy): string | undefined {
  if (url === "") return "endpoint is required (the PushSubscription's endpoint URL)";
  if (url.length > MAX_PUSH_ENDPOINT_LENGTH) {
    return `endpoint is ${url.length} characters; the limit is ${MAX_PUSH_ENDPOINT_LENGTH}`;
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting them is the point
  if (/[\s\u0000-\u001f\u007f]/.test(url)) return "endpoint must not contain spaces or control characters";
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "endpoint is not an absolute URL (expected https://push.example.com/...)";
  }
  const schemes = policy.allowPrivate ? ["https:", "http:"] : ["https:"];
  if (!schemes.includes(parsed.protocol)) {
    return `endpoint must be an ${schemes.map((s) => `${s}//`).join(" or ")} URL, not ${parsed.protocol}//`;
  }
  if (parsed.username !== "" || parsed.password !== "") return "endpoint must not contain a user name or password";
  const host = hostOf(parsed);
  if (host === "") return "endpoint has no host";
  if (policy.allowPrivate) return undefined;
  if (isIP(host) !== 0) {
    return isPublicAddress(host)
      ? undefined
      : `endpoint host ${parsed.hostname} is not a public address (loopback, private, link-local and special-purpose addresses are refused)`;
  }
  if (PRIVATE_NAME_SUFFIXES.some((s) => host === s || host.endsWith(`.${s}`))) {
    return `endpoint host ${host} is a local name, not a public push service`;
  }
  if (!host.includes(".")) return `endpoint host ${host} is not a fully qualified public host name`;
  return undefined;
}

/** hostOf returns the URL's host without IPv6 brackets or a trailing dot, lower-case. */
function hostOf(url: URL): string {
  let host = url.hostname.toLowerCase();
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  if (host.endsWith(".")) host = host.slice(0, -1);
  return host;
}

/**
 * isPublicAddress says whether `ip` (IPv4 dotted decimal or IPv6, with or
 * without brackets or a %zone) is a globally reachable unicast address; false
 * for anything that is not an IP address. IPv4 refuses 0/8, 10/8, 100.64/10,
 * 127/8, 169.254/16, 172.16/12, 192.0.0/24, 192.0.2/24, 192.88.99/24,
 * 192.168/16, 198.18/15, 198.51.100/24, 203.0.113/24, 224/4 and 240/4
 * (broadcast included). IPv6 is public only inside 2000::/3 (so ::, ::1,
 * fc00::/7, fe80::/10, fec0::/10, ff00::/8, 100::/64 and 64:ff9b:1::/48 are
 * not), minus 2001::/23 (protocol assignments, Teredo), 2001:db8::/32 and
 * 3fff::/20 (documentation) and 5f00::/16 (SRv6); an IPv4 address embedded
 * by IPv4-mapped (::ffff:0:0/96), NAT64 (64:ff9b::/96) or 6to4 (2002::/16)
 * is judged as that IPv4 address.
 */
export function isPublicAddress(ip: string): boolean {
  let s = ip.trim();
  if (s.startsWith("[") && s.endsWith("]")) s = s.slice(1, -1);
  const zone = s.indexOf("%");
  if (zone >= 0) s = s.slice(0, zone);
  const kind = isIP(s);
  if (kind === 4) return isPublicV4(parseV4(s));
  if (kind === 6) return isPublicV6(parseV6(s));
  return false;
}

/** parseV4 turns a dotted decimal address (already validated) into its 4 bytes. */
function parseV4(s: string): number[] {
  return s.split(".").map((p) => Number.parseInt(p, 10));
}

/** parseV6 turns an IPv6 address (already validated by isIP) into its 16 bytes. */
function parseV6(s: string): number[] {
  let text = s;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tail.push(...parseV4(text.slice(lastColon + 1)));
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head = "", rest] = text.split("::");
  const groups = (part: string): number[] => (part === "" ? [] : part.split(":").map((g) => Number.parseInt(g, 16)));
  const left = groups(head);
  const right = rest === undefined ? [] : groups(rest);
  const words = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  const bytes = words.flatMap((w) => [w >> 8, w & 0xff]);
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

/** inV4 says whether `b` lies in `net`/`bits`. */
function inV4(b: readonly number[], net: readonly number[], bits: number): boolean {
  const value = (x: readonly number[]) => (((x[0] ?? 0) << 24) | ((x[1] ?? 0) << 16) | ((x[2] ?? 0) << 8) | (x[3] ?? 0)) >>> 0;
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return ((value(b) & mask) >>> 0) === ((value(net) & mask) >>> 0);
}

const NON_PUBLIC_V4: ReadonlyArray<readonly [readonly number[], number]> = [
  [[0, 0, 0, 0], 8],
  [[10, 0, 0, 0], 8],
  [[100, 64, 0, 0], 10],
  [[127, 0, 0, 0], 8],
  [[169, 254, 0, 0], 16],
  [[172, 16, 0, 0], 12],
  [[192, 0, 0, 0], 24],
  [[192, 0, 2, 0], 24],
  [[192, 88, 99, 0], 24],
  [[192, 168, 0, 0], 16],
  [[198, 18, 0, 0], 15],
  [[198, 51, 100, 0], 24],
  [[203, 0, 113, 0], 24],
  [[224, 0, 0, 0], 4],
  [[240, 0, 0, 0], 4],
];

function isPublicV4(b: readonly number[]): boolean {
  return !NON_PUBLIC_V4.some(([net, bits]) => inV4(b, net, bits));
}

/** inV6 says whether the first `bits` bits of `b` equal those of `prefix` (given as bytes, zero-filled). */
function inV6(b: readonly number[], prefix: readonly number[], bits: number): boolean {
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((b[i] ?? 0) & mask) !== ((prefix[i] ?? 0) & mask)) return false;
  }
  return true;
}

const MAPPED_V4 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
const NAT64_V4 = [0x00, 0x64, 0xff, 0x9b];

const NON_PUBLIC_V6: ReadonlyArray<readonly [readonly number[], number]> = [
  [[0x20, 0x01], 23],
  [[0x20, 0x01, 0x0d, 0xb8], 32],
  [[0x3f, 0xff], 20],
  [[0x5f, 0x00], 16],
];

function isPublicV6(b: readonly number[]): boolean {
  if (inV6(b, MAPPED_V4, 96) || inV6(b, NAT64_V4, 96)) return isPublicV4(b.slice(12, 16));
  if (inV6(b, [0x20, 0x02], 16)) return isPublicV4(b.slice(2, 6));
  if (!inV6(b, [0x20], 3)) return false;
  return !NON_PUBLIC_V6.some(([net, bits]) => inV6(b, net, bits));
}
