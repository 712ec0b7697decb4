/**
 * A process that serves only some services (`--services=`, the production
 * shape) answers UNIMPLEMENTED for the chat.v1 services it does not serve,
 * over every protocol and to grpc-js, so a client without Envoy in front
 * learns that it must route by service path instead of retrying. Needs
 * NATS_URL (separate processes share a bus).
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import { PrivateNatsServer } from "../support/private-nats-server.js";
import { authMetadata, grpcJsClient, unary } from "../support/grpc-js-client.js";
import { type Protocol, type TestServer, registerUser, startTestServer } from "../support/test-server.js";

describe("a process serving only the auth service", { skip: !process.env.NATS_URL }, () => {
  let nats: PrivateNatsServer;
  let server: TestServer;
  before(async () => {
    nats = await PrivateNatsServer.create();
    await nats.start();
    server = await startTestServer({ SERVICES: "auth", BUS_URL: nats.url });
  });
  after(async () => {
    await server.stop();
    await nats.dispose();
  });

  for (const protocol of ["grpc", "grpc-web", "connect", "connect-binary"] as Protocol[]) {
    it(`answers UNIMPLEMENTED for the services it does not serve (${protocol})`, async () => {
      const alice = await registerUser(server.baseUrl, protocol, "split");
      const calls: [string, () => Promise<unknown>][] = [
        ["ListGroups", () => alice.groups.listGroups({})],
        ["SendMessage", () => alice.messages.sendMessage({ groupId: "00000000-0000-7000-8000-000000000000", text: "x", clientMessageId: "s1" })],
        ["ListMessages", () => alice.messages.listMessages({ groupId: "00000000-0000-7000-8000-000000000000" })],
        ["Subscribe", async () => {
          for await (const _ of alice.streams.subscribe({})) break;
        }],
      ];
      for (const [name, call] of calls) {
        const err = await call().then(() => undefined, (e: unknown) => ConnectError.from(e));
        assert.equal(err?.code, Code.Unimplemented, `${name}: ${String(err)}`);
      }
    });
  }

  it("answers UNIMPLEMENTED to grpc-js", async () => {
    const alice = await registerUser(server.baseUrl, "grpc", "splitjs");
    const client = grpcJsClient(server.port, GroupService);
    try {
      const err = await unary(client, "listGroups", {}, authMetadata(alice.token)).then(
        () => undefined,
        (e: { code?: number }) => e,
      );
      assert.equal(err?.code, GrpcStatus.UNIMPLEMENTED);
    } finally {
      client.close();
    }
  });
});
