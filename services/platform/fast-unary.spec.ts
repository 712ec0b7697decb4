import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isChatError } from "../core/errors.js";
import { grpcTimeoutMs } from "./fast-unary.js";

describe("grpcTimeoutMs", () => {
  it("reads every unit of the gRPC spec as milliseconds, and no header as no deadline", () => {
    assert.deepEqual(
      ["2H", "3M", "10S", "250m", "1500u", "2000000n", "99999999S"].map(grpcTimeoutMs),
      [7_200_000, 180_000, 10_000, 250, 1.5, 2, 99_999_999_000],
    );
    assert.equal(grpcTimeoutMs(undefined), undefined);
  });

  it("refuses anything else as InvalidArgument", () => {
    for (const bad of ["", "10", "S", "123456789S", "1.5S", "-1S", "10s", " 10S", ["10S", "10S"]]) {
      assert.throws(() => grpcTimeoutMs(bad), (e) => isChatError(e, "InvalidArgument") && /grpc-timeout .* is malformed/.test(e.message), String(bad));
    }
  });
});
