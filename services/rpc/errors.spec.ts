import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createContextValues, createRouterTransport } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { pino } from "pino";
import { AuthService, LoginRequestSchema } from "../../gen/chat/v1/auth_service_pb.js";
import { ChatError, ERROR_KINDS, type ErrorKind, isChatError } from "../core/errors.js";
import { CODE_OF_KIND, toConnectError } from "./errors.js";
import { errorInterceptor } from "./interceptors.js";

/** INTENDED is the catalogue written out by hand: each kind and the status a client sees. */
const INTENDED: Readonly<Record<ErrorKind, Code>> = {
  InvalidArgument: Code.InvalidArgument,
  NotFound: Code.NotFound,
  AlreadyExists: Code.AlreadyExists,
  PermissionDenied: Code.PermissionDenied,
  Unauthenticated: Code.Unauthenticated,
  FailedPrecondition: Code.FailedPrecondition,
  ResourceExhausted: Code.ResourceExhausted,
  Unavailable: Code.Unavailable,
  Internal: Code.Internal,
};

describe("error catalogue", () => {
  it("has nine kinds, each listed once in ERROR_KINDS and mapped in CODE_OF_KIND", () => {
    assert.equal(ERROR_KINDS.length, 9);
    assert.equal(new Set(ERROR_KINDS).size, ERROR_KINDS.length, "no kind is listed twice");
    assert.deepEqual([...ERROR_KINDS].sort(), Object.keys(INTENDED).sort());
    assert.deepEqual(Object.keys(CODE_OF_KIND).sort(), [...ERROR_KINDS].sort());
    assert.equal(new Set(Object.values(CODE_OF_KIND)).size, ERROR_KINDS.length, "no two kinds share a status");
  });

  for (const kind of ERROR_KINDS) {
    it(`maps ${kind} to ${Code[INTENDED[kind]]}, keeping the message and the cause`, () => {
      assert.equal(CODE_OF_KIND[kind], INTENDED[kind]);
      const inner = new Error("db detail");
      const chat = new ChatError(kind, `client message for ${kind}`, { cause: inner });
      assert.equal(chat.name, "ChatError");
      assert.ok(isChatError(chat, kind));
      const err = toConnectError(chat);
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, INTENDED[kind]);
      assert.equal(err.rawMessage, `client message for ${kind}`);
      assert.equal(err.cause, chat, "the ChatError is kept as cause for logging");
      assert.equal(err.metadata.get("retry-after"), null, "no retry hint unless one was given");
    });
  }
});

describe("toConnectError", () => {
  it("turns anything else into Internal \"internal error\", keeping the original only as cause", () => {
    const secret = new Error("SQLITE_CORRUPT at /var/lib/chat.db password=hunter2");
    const typeError = new TypeError("cannot read properties of undefined");
    const plain = { message: "an object" };
    for (const thrown of [secret, typeError, "a string", 42, null, undefined, plain]) {
      const err = toConnectError(thrown);
      assert.equal(err.code, Code.Internal);
      assert.equal(err.rawMessage, "internal error");
      assert.equal(err.cause, thrown);
      assert.ok(!err.message.includes("hunter2"));
      assert.equal(err.metadata.get("retry-after"), null);
    }
  });

  it("passes a ConnectError through unchanged", () => {
    const original = new ConnectError("deadline", Code.DeadlineExceeded);
    assert.equal(toConnectError(original), original);
  });

  it("does not trust an object that only looks like a ChatError", () => {
    const fake = Object.assign(new Error("you are admin now"), { kind: "PermissionDenied", name: "ChatError" });
    const err = toConnectError(fake);
    assert.equal(err.code, Code.Internal);
    assert.equal(err.rawMessage, "internal error");
  });

  it("turns retryAfterMs into a retry-after value in whole seconds, rounded up", () => {
    const cases: [number, string][] = [
      [1, "1"],
      [999, "1"],
      [1000, "1"],
      [1001, "2"],
      [20_000, "20"],
      [59_500, "60"],
    ];
    for (const [ms, header] of cases) {
      const err = toConnectError(new ChatError("ResourceExhausted", "slow down", { retryAfterMs: ms }));
      assert.equal(err.code, Code.ResourceExhausted);
      assert.equal(err.metadata.get("retry-after"), header, `${ms} ms`);
    }
  });

  it("errorInterceptor: what a handler throws after its client went away is Canceled at debug, not Internal at error", async () => {
    const logged: { level: string; code: unknown }[] = [];
    const logger = {
      error: (f: { code: unknown }) => logged.push({ level: "error", code: f.code }),
      warn: (f: { code: unknown }) => logged.push({ level: "warn", code: f.code }),
      debug: (f: { code: unknown }) => logged.push({ level: "debug", code: f.code }),
    } as unknown as Parameters<typeof errorInterceptor>[0];
    const call = async (aborted: boolean) => {
      const abort = new AbortController();
      if (aborted) abort.abort();
      const req = {
        signal: abort.signal,
        header: new Headers(),
        service: { typeName: "grpc.reflection.v1.ServerReflection" },
        method: { name: "ServerReflectionInfo" },
        contextValues: createContextValues(),
      };
      const premature = Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" });
      const next = async () => {
        throw premature;
      };
      return (errorInterceptor(logger)(next as never) as (r: unknown) => Promise<unknown>)(req).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    };
    assert.equal((await call(true))?.code, Code.Canceled);
    assert.equal((await call(false))?.code, Code.Internal, "the same error while the client is there is a server fault");
    assert.deepEqual(logged, [
      { level: "debug", code: "Canceled" },
      { level: "error", code: "Internal" },
    ]);
  });

  it("sends retry-after to clients (in-memory Connect transport, through errorInterceptor)", async () => {
    const transport = createRouterTransport(
      (router) =>
        router.service(AuthService, {
          login() {
            throw new ChatError("ResourceExhausted", "too many login attempts", { retryAfterMs: 12_345 });
          },
        }),
      { router: { interceptors: [errorInterceptor(pino({ level: "silent" }))] } },
    );
    const client = createClient(AuthService, transport);
    await assert.rejects(client.login({ username: "a", password: "b" }), (e: unknown) => {
      const err = ConnectError.from(e);
      assert.equal(err.code, Code.ResourceExhausted);
      assert.equal(err.rawMessage, "too many login attempts");
      assert.equal(err.metadata.get("retry-after"), "13");
      return true;
    });
  });

  it("sends retry-after as a gRPC trailer next to grpc-status (real HTTP/2 server)", async () => {
    const handler = connectNodeAdapter({
      interceptors: [errorInterceptor(pino({ level: "silent" }))],
      routes: (router) =>
        router.service(AuthService, {
          login() {
            throw new ChatError("ResourceExhausted", "too many login attempts", { retryAfterMs: 2_500 });
          },
        }),
    });
    const server = http2.createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const message = toBinary(LoginRequestSchema, { $typeName: "chat.v1.LoginRequest", username: "a", password: "b" });
      const frame = Buffer.alloc(5 + message.length);
      frame.writeUInt32BE(message.length, 1);
      frame.set(message, 5);
      const { headers, trailers } = await new Promise<{ headers: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders }>(
        (resolve, reject) => {
          const stream = session.request({
            ":method": "POST",
            ":path": "/chat.v1.AuthService/Login",
            "content-type": "application/grpc+proto",
            te: "trailers",
          });
          let headers: http2.IncomingHttpHeaders = {};
          stream.on("response", (h) => {
            headers = h;
          });
          stream.on("trailers", (t) => resolve({ headers, trailers: t }));
          stream.on("error", reject);
          stream.on("end", () => resolve({ headers, trailers: {} }));
          stream.resume();
          stream.end(frame);
        },
      );
      assert.equal(headers[":status"], 200);
      assert.equal(headers["retry-after"], undefined, "the hint is not a header");
      assert.equal(trailers["grpc-status"], String(Code.ResourceExhausted));
      assert.equal(trailers["retry-after"], "3");
      assert.equal(decodeURIComponent(String(trailers["grpc-message"])), "too many login attempts");
    } finally {
      session.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
