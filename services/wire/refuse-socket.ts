/**
 * The answer to a request whose socket was handed over (an HTTP/1.1 upgrade, a request the one-port server could
 * not replay): a short HTTP/1.1 error written to the socket itself, then the socket closed.
 */
import type net from "node:net";

const REASONS = {
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
} as const;

/** EXTRA_HEADERS are the header lines a refusal of that status carries besides its body (401: the RFC 6750 challenge). */
const EXTRA_HEADERS: Partial<Record<keyof typeof REASONS, string>> = { 401: "www-authenticate: Bearer\r\n" };

/** REFUSED_SOCKET_GRACE_MS is how long a refused client has to take the answer before its socket is dropped. */
const REFUSED_SOCKET_GRACE_MS = 10_000;

/**
 * refuseSocket answers a request whose socket was handed over (an upgrade)
 * with an HTTP error and a text body, then destroys the socket: it is no
 * longer the HTTP server's, so nothing else would ever close it.
 */
export function refuseSocket(socket: net.Socket, status: keyof typeof REASONS, message: string): void {
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status]}\r\nconnection: close\r\ncontent-type: text/plain\r\n${EXTRA_HEADERS[status] ?? ""}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    () => socket.destroy(),
  );
  // A client that never reads must not keep the socket either.
  setTimeout(() => socket.destroy(), REFUSED_SOCKET_GRACE_MS).unref();
}
