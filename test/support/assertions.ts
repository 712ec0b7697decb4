/** Assertions on failed calls, for connect-es clients and for grpc-js clients. */
import assert from "node:assert/strict";
import { type Code, ConnectError, Code as Codes } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";

/** rejectsWith awaits `p`, asserts it failed with `code`, a non-empty message (matching `message` if given), and returns the error. */
export async function rejectsWith(p: Promise<unknown>, code: Code, message?: RegExp): Promise<ConnectError> {
  let err: ConnectError | undefined;
  try {
    await p;
  } catch (e) {
    err = ConnectError.from(e);
  }
  assert.ok(err, `expected ${Codes[code]}, but the call succeeded`);
  assert.equal(err.code, code, `expected ${Codes[code]}, got ${Codes[err.code]}: ${err.rawMessage}`);
  assert.ok(err.rawMessage.length > 0, "the error has a message");
  if (message) assert.match(err.rawMessage, message);
  return err;
}

/** grpcRejects awaits a grpc-js call and asserts its status (and details). */
export async function grpcRejects(p: Promise<unknown>, code: grpc.status, message?: RegExp): Promise<grpc.ServiceError> {
  let err: grpc.ServiceError | undefined;
  try {
    await p;
  } catch (e) {
    err = e as grpc.ServiceError;
  }
  assert.ok(err, `expected status ${grpc.status[code]}, but the call succeeded`);
  assert.equal(err.code, code, `expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
  if (message) assert.match(err.details, message);
  return err;
}
