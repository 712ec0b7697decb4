/**
 * An HTTP/1.1 POST for push services that checks where it connects: the host
 * is resolved once, every address must be public (unless allowed), and the
 * connection goes to those checked addresses (no second DNS lookup, so no
 * DNS rebinding between check and connect). Redirects are never followed
 * (the caller gets the 3xx), the whole exchange is bounded by a timeout, and
 * a custom CA may be trusted.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import * as http from "node:http";
import * as https from "node:https";
import { type LookupFunction, isIP } from "node:net";
import { isPublicAddress } from "../../core/push-endpoint.js";

/** ResolveHost returns every address of a host name (the system resolver by default; tests pass their own). */
export type ResolveHost = (hostname: string) => Promise<readonly string[]>;

/** resolveWithSystem is getaddrinfo (dns.lookup, all addresses, in the resolver's order). */
export const resolveWithSystem: ResolveHost = async (hostname) =>
  (await dnsLookup(hostname, { all: true, verbatim: true })).map((a) => a.address);

/** RefusedAddressError says the host resolved to an address the policy refuses; nothing was sent. */
export class RefusedAddressError extends Error {
  override readonly name = "RefusedAddressError";
}

/** HttpReply is a complete answer; `body` holds at most the client's maxResponseBytes. */
export interface HttpReply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

/** CheckedHttpOptions configures {@link createCheckedHttp}. */
export interface CheckedHttpOptions {
  /** allowPrivate skips the public-address check (tests' loopback receivers, trusted configured URLs). */
  readonly allowPrivate: boolean;
  /** ca is trusted in addition to the system's roots (PEM). */
  readonly ca?: string | undefined;
  /** timeoutMs bounds one post: resolving, connecting, sending and reading the whole answer. */
  readonly timeoutMs: number;
  /** resolve replaces the system resolver. */
  readonly resolve?: ResolveHost | undefined;
  /** maxResponseBytes keeps at most this much of an answer's body; default 64 KiB. */
  readonly maxResponseBytes?: number | undefined;
}

/** CheckedHttp posts with keep-alive connections; close() drops them. */
export interface CheckedHttp {
  /**
   * post sends one POST and resolves with the answer, whatever its status
   * (3xx included: nothing is followed). Rejects with RefusedAddressError
   * (before connecting) or with the network error or timeout.
   */
  post(url: URL, headers: http.OutgoingHttpHeaders, body: Buffer | string): Promise<HttpReply>;
  close(): void;
}

/** createCheckedHttp returns a client for http: and https: URLs under `opts`. */
export function createCheckedHttp(opts: CheckedHttpOptions): CheckedHttp {
  const resolve = opts.resolve ?? resolveWithSystem;
  const maxBody = opts.maxResponseBytes ?? 64 * 1024;
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 64, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) });

  async function addressesOf(host: string, deadline: number): Promise<readonly string[]> {
    if (isIP(host) !== 0) return [host];
    let timer: NodeJS.Timeout | undefined;
    try {
      const addresses = await Promise.race([
        resolve(host),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`resolving ${host} took over ${opts.timeoutMs} ms`)), Math.max(1, deadline - Date.now()));
        }),
      ]);
      if (addresses.length === 0) throw new Error(`${host} has no address`);
      return addresses;
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    async post(url, headers, body) {
      const deadline = Date.now() + opts.timeoutMs;
      if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error(`cannot post to a ${url.protocol} URL`);
      const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
      const addresses = await addressesOf(host, deadline);
      if (!opts.allowPrivate) {
        const refused = addresses.find((a) => !isPublicAddress(a));
        if (refused !== undefined) {
          throw new RefusedAddressError(
            refused === host ? `${host} is not a public address` : `${host} resolves to ${refused}, which is not a public address`,
          );
        }
      }
      // Connect to the checked addresses only: the socket asks this, never DNS.
      const lookup: LookupFunction = (_name, options, callback) => {
        if (options.all) callback(null, addresses.map((address) => ({ address, family: isIP(address) })));
        else callback(null, addresses[0] ?? "", isIP(addresses[0] ?? ""));
      };
      const tls = url.protocol === "https:";
      return new Promise<HttpReply>((resolveReply, reject) => {
        let settled = false;
        const finish = (err: Error | undefined, reply?: HttpReply) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (err !== undefined || reply === undefined) reject(err ?? new Error("no answer"));
          else resolveReply(reply);
        };
        const req = (tls ? https : http).request({
          protocol: url.protocol,
          hostname: host,
          ...(url.port !== "" ? { port: Number(url.port) } : {}),
          path: `${url.pathname}${url.search}`,
          method: "POST",
          headers,
          agent: tls ? httpsAgent : httpAgent,
          lookup,
        });
        const timer = setTimeout(
          () => req.destroy(new Error(`no complete answer within ${opts.timeoutMs} ms`)),
          Math.max(1, deadline - Date.now()),
        );
        req.on("error", (err) => finish(err));
        req.on("response", (res) => {
          const chunks: Buffer[] = [];
          let kept = 0;
          res.on("data", (chunk: Buffer) => {
            if (kept >= maxBody) return;
            const part = chunk.subarray(0, maxBody - kept);
            chunks.push(part);
            kept += part.length;
          });
          res.on("error", (err) => finish(err));
          res.on("close", () => finish(new Error("the connection closed before the answer was complete")));
          res.on("end", () => finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        });
        req.end(body);
      });
    },
    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}
