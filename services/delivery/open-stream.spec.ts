import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { SubscribeRequestSchema } from "../../gen/chat/v1/stream_service_pb.js";
import { type HubFixture, RecordingSink, createHubFixture } from "../../test/support/hub-fixture.js";
import { isChatError } from "../core/errors.js";
import { newId } from "../core/ids.js";
import type { Principal } from "../core/principal.js";
import { openStream } from "./open-stream.js";
import { MAX_CURSORS } from "./stream-limits.js";

describe("openStream (every transport's opening)", () => {
  let fixture: HubFixture;
  let caller: Principal;
  before(async () => {
    fixture = createHubFixture();
    const user = { id: newId(), username: "opener" };
    await fixture.store.createUser({ ...user, createdAt: Date.now(), passwordHash: "x" });
    caller = { userId: user.id, username: user.username, sessionId: newId(), expiresAt: Date.now() + 3_600_000 };
  });
  after(() => fixture.close());

  const open = (request: Parameters<typeof openStream>[0]["request"], sink = new RecordingSink(), gone = () => false) =>
    openStream({ hub: fixture.hub, principal: caller, request, sink, gone });

  it("opens from a decoded request or its binary bytes alike: StreamReady first", async () => {
    for (const request of [create(SubscribeRequestSchema, {}), toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, {}))]) {
      const sink = new RecordingSink();
      const handle = await open(request, sink);
      assert.ok(handle);
      assert.equal(sink.items[0]?.message.payload.case, "ready");
      handle.close();
    }
  });

  it("refuses bytes that are no SubscribeRequest, and more than MAX_CURSORS cursors, with InvalidArgument and opens nothing", async () => {
    const size = fixture.hub.size;
    const cursor = { groupId: newId(), seq: 1n, epoch: "" };
    const tooMany = create(SubscribeRequestSchema, { cursors: Array.from({ length: MAX_CURSORS + 1 }, () => cursor) });
    for (const request of [Uint8Array.from([0x0a, 0x05]), tooMany, create(SubscribeRequestSchema, { cursors: [{ groupId: "nope", seq: 1n }] })]) {
      await assert.rejects(open(request), (e) => isChatError(e) && e.kind === "InvalidArgument");
    }
    assert.equal(fixture.hub.size, size);
  });

  it("opens nothing for a client already gone, and closes what it opened if the client went meanwhile", async () => {
    const size = fixture.hub.size;
    const sink = new RecordingSink();
    assert.equal(await open(create(SubscribeRequestSchema, {}), sink, () => true), undefined);
    assert.equal(sink.items.length, 0);
    let asked = 0;
    const handle = await open(create(SubscribeRequestSchema, {}), new RecordingSink(), () => asked++ > 0);
    assert.ok(handle);
    assert.equal(fixture.hub.size, size, "closed again at once");
  });
});
