/**
 * A revoked session opens no stream (issue 12, point 3), end to end on a
 * real server: after Logout, and after refresh-token reuse revoked the
 * family, the session's still-unexpired access token is refused with
 * UNAUTHENTICATED "session was revoked; log in again" and gets no
 * StreamReady on every way of opening a stream — Subscribe over grpc-js,
 * gRPC-Web, Connect binary (the fast path) and Connect JSON (connect-node),
 * the Connect RPC over gRPC (fast path, grpc-js and connect-es) and over
 * Connect JSON (connect-node), and the WebSocket (close 4016) — while another
 * session of the same user keeps opening streams.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { type ConnectRequest, ConnectRequestSchema, StreamService, type SubscribeResponse } from "../../gen/chat/v1/stream_service_pb.js";
import { authMetadata, grpcJsClient } from "../support/grpc-js-client.js";
import { WsStreamEnd, grpcJsSubscribe, wsSubscribe } from "../support/stream-reader.js";
import { type Protocol, type TestServer, clientsFor, registerUser, startTestServer } from "../support/test-server.js";

const PASSWORD = "correct horse battery";
const REVOKED = "session was revoked; log in again";

/** Outcome is how an attempt to open a stream went: StreamReady first, or an error status before any item. */
type Outcome = { readonly ready: true } | { readonly ready: false; readonly code: number; readonly message: string; readonly items: number };

/** firstOutcome reads a stream's first item or its error, then lets it go. */
async function firstOutcome(open: (signal: AbortSignal) => AsyncIterable<SubscribeResponse>, ms = 5000): Promise<Outcome> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), ms);
  let items = 0;
  try {
    for await (const item of open(abort.signal)) {
      items++;
      if (item.payload.case === "ready") return { ready: true };
    }
    return { ready: false, code: 0, message: "the stream ended without StreamReady", items };
  } catch (e) {
    const err = ConnectError.from(e);
    return { ready: false, code: err.code, message: err.rawMessage, items };
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
}

/** connectRequests is a Connect RPC's client side: `subscribe`, then nothing until the stream is let go. */
async function* connectRequests(signal: AbortSignal): AsyncIterable<ConnectRequest> {
  yield create(ConnectRequestSchema, { payload: { case: "subscribe", value: { cursors: [] } } });
  await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
}

/** grpcJsOutcome opens Subscribe or Connect with @grpc/grpc-js and reports its first item or status. */
function grpcJsOutcome(port: number, token: string, rpc: "subscribe" | "connect"): Promise<Outcome> {
  const client = grpcJsClient(port, StreamService);
  return new Promise<Outcome>((resolve) => {
    let items = 0;
    let call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>;
    if (rpc === "subscribe") {
      call = grpcJsSubscribe(client, token).call;
    } else {
      const duplex = (client.connect as (md: grpc.Metadata) => grpc.ClientDuplexStream<unknown, unknown>).call(client, authMetadata(token));
      duplex.write({ payload: { case: "subscribe", value: { cursors: [] } } });
      call = duplex;
    }
    const done = (o: Outcome) => {
      clearTimeout(timer);
      call.removeAllListeners();
      call.on("error", () => {});
      call.cancel();
      client.close();
      resolve(o);
    };
    const timer = setTimeout(() => done({ ready: false, code: -1, message: "timed out", items }), 5000);
    call.on("data", (d: { payload?: { case?: string; value?: { payload?: { case?: string } } } }) => {
      items++;
      const kind = rpc === "subscribe" ? d.payload?.case : d.payload?.value?.payload?.case;
      if (kind === "ready") done({ ready: true });
    });
    call.on("error", (e: grpc.ServiceError) => done({ ready: false, code: e.code, message: e.details, items }));
    call.on("end", () => done({ ready: false, code: 0, message: "ended", items }));
  });
}

/** wsOutcome opens Subscribe over WebSocket and reports StreamReady or the close (4000 + code). */
async function wsOutcome(port: number, token: string): Promise<Outcome> {
  const reader = wsSubscribe(port, token);
  try {
    await reader.waitFor((r) => r.done || r.items.length > 0, 5000, "an item or the close");
    if (reader.items[0]?.payload.case === "ready") return { ready: true };
    const end = reader.error;
    assert.ok(end instanceof WsStreamEnd, `the WebSocket ended with ${String(end)}`);
    assert.equal(end.closeCode, 4000 + Code.Unauthenticated, "close code 4016");
    return { ready: false, code: end.code ?? -1, message: end.reason, items: reader.items.length };
  } finally {
    reader.close();
  }
}

/** openings tries every way of opening a stream with `token` and names each outcome. */
async function openings(server: TestServer, token: string): Promise<Map<string, Outcome>> {
  const out = new Map<string, Outcome>();
  const subscribeOver = (protocol: Protocol) => {
    const c = clientsFor(server.baseUrl, protocol);
    c.token = token;
    return firstOutcome((signal) => c.streams.subscribe({ cursors: [] }, { signal }));
  };
  const connectOver = (protocol: Protocol) => {
    const c = clientsFor(server.baseUrl, protocol);
    c.token = token;
    return firstOutcome(async function* (signal) {
      for await (const res of c.streams.connect(connectRequests(signal), { signal })) {
        if (res.payload.case === "item") yield res.payload.value;
      }
    });
  };
  out.set("Subscribe, grpc-js (fast path, HTTP/2)", await grpcJsOutcome(server.port, token, "subscribe"));
  out.set("Subscribe, connect-es gRPC (fast path)", await subscribeOver("grpc"));
  out.set("Subscribe, connect-es gRPC-Web (fast path, HTTP/1.1)", await subscribeOver("grpc-web"));
  out.set("Subscribe, connect-es Connect binary (fast path)", await subscribeOver("connect-binary"));
  out.set("Subscribe, connect-es Connect JSON (connect-node)", await subscribeOver("connect"));
  out.set("Connect, grpc-js (fast path)", await grpcJsOutcome(server.port, token, "connect"));
  out.set("Connect, connect-es gRPC (fast path)", await connectOver("grpc"));
  out.set("Connect, connect-es Connect JSON (connect-node)", await connectOver("connect"));
  out.set("Subscribe, WebSocket", await wsOutcome(server.port, token));
  return out;
}

/** assertRefused checks that every opening failed UNAUTHENTICATED "session was revoked" before any item. */
function assertRefused(outcomes: Map<string, Outcome>): void {
  for (const [how, o] of outcomes) {
    assert.equal(o.ready, false, `${how}: opened a stream for a revoked session`);
    if (o.ready) continue;
    assert.equal(o.code, Code.Unauthenticated, `${how}: ${o.message}`);
    assert.equal(o.message, REVOKED, how);
    assert.equal(o.items, 0, `${how}: items before the error`);
  }
}

/** assertOpened checks that every opening got StreamReady. */
function assertOpened(outcomes: Map<string, Outcome>): void {
  for (const [how, o] of outcomes) assert.equal(o.ready, true, `${how}: ${o.ready ? "" : `${o.code} ${o.message}`}`);
}

describe("a revoked session opens no stream (e2e)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  it("after Logout, the session's access token opens no stream on any transport; another session of the user does", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "rvlo");
    const other = clientsFor(server.baseUrl, "grpc");
    other.token = (await other.auth.login({ username: alice.username, password: PASSWORD })).tokens?.accessToken;
    assert.ok(alice.token && other.token);
    assertOpened(await openings(server, alice.token));

    await alice.auth.logout({ refreshToken: alice.refreshToken ?? "" });
    // The access token itself is still valid for unary calls until it expires (stateless JWT) ...
    await alice.groups.listGroups({});
    // ... but no stream opens on it any more.
    assertRefused(await openings(server, alice.token));
    assertOpened(await openings(server, other.token));
  });

  it("after refresh-token reuse revoked the family, none of its access tokens opens a stream; another session does", async () => {
    const alice = await registerUser(server.baseUrl, "grpc-web", "rvre");
    const other = clientsFor(server.baseUrl, "grpc");
    other.token = (await other.auth.login({ username: alice.username, password: PASSWORD })).tokens?.accessToken;
    const first = alice.token;
    const r1 = alice.refreshToken ?? "";
    const rotated = (await alice.auth.refreshToken({ refreshToken: r1 })).tokens;
    assert.ok(first && rotated?.accessToken && other.token);
    await alice.auth.refreshToken({ refreshToken: rotated.refreshToken }); // its successor is used too
    // A replay of the rotated token (its successor used, so no lost answer) revokes the whole family.
    await assert.rejects(alice.auth.refreshToken({ refreshToken: r1 }), (e) => ConnectError.from(e).code === Code.Unauthenticated);
    assertRefused(await openings(server, rotated.accessToken));
    assertRefused(await openings(server, first));
    assertOpened(await openings(server, other.token));
  });
});
