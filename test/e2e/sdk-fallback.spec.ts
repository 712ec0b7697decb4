/**
 * @chat/client without a WebSocket: the live connection is the server-streaming Subscribe over Connect or
 * gRPC-Web (connect-web over fetch) and sends are unary. Same guarantees as over WebSocket: each event once at its
 * seq, resume across a server restart.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type ChatEvent, ChatClient } from "@chat/client";
import { freePort, until } from "../support/helpers.js";
import { type TestServer, startTestServer, uniqueName } from "../support/test-server.js";

describe("@chat/client live over a server stream (no WebSocket)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ PORT: String(await freePort()) });
  });
  after(async () => {
    await server.stop();
  });

  for (const protocol of ["connect", "grpc-web"] as const) {
    it(`delivers each message once at its seq and resumes after a restart (${protocol})`, async () => {
      const make = () => new ChatClient({ baseUrl: server.baseUrl, protocol, live: "stream", backoff: { initialMs: 50, maxMs: 500 }, sendAttempts: 30 });
      const alice = make();
      const bob = make();
      await alice.register(uniqueName(`fa${protocol.length}`), "correct horse battery");
      await bob.register(uniqueName(`fb${protocol.length}`), "correct horse battery");
      const group = await alice.createGroup(`fallback ${protocol}`, { members: [bob.user?.username ?? ""] });
      const seen: ChatEvent[] = [];
      const states: string[] = [];
      bob.on("event", (e) => void seen.push(e));
      bob.on("state", (s) => void states.push(s.state));
      await bob.start();
      try {
        await bob.whenLive();
        const sent = new Map<number, string>();
        for (let i = 0; i < 10; i++) {
          if (i === 4) await server.restart();
          const res = await alice.send(group.groupId, `${protocol} ${i}`);
          assert.equal(res.via, "unary");
          sent.set(Number(res.seq), `${protocol} ${i}`);
        }
        await until(() => bob.cursor(group.groupId) === 12n, "bob to reach #12");
        assert.deepEqual(
          seen.map((e) => [Number(e.seq), e.type === "message" ? e.message.text : e.type]),
          [...sent].sort((a, b) => a[0] - b[0]),
        );
        assert.deepEqual([...sent.keys()].sort((a, b) => a - b), Array.from({ length: 10 }, (_, i) => i + 3));
        assert.ok(states.includes("reconnecting"), `bob reconnected (states: ${states.join(", ")})`);
      } finally {
        await bob.close();
      }
    });
  }
});
