import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  create,
  createFileRegistry,
  fromBinary,
  toBinary,
  toJson,
  type DescFile,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, createRouterTransport, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import { MemberRoleSchema } from "../../gen/chat/v1/group_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import {
  MessageService,
  SendMessageRequestSchema,
  file_chat_v1_message_service,
} from "../../gen/chat/v1/message_service_pb.js";
import { NotificationService } from "../../gen/chat/v1/notification_service_pb.js";
import { StreamService } from "../../gen/chat/v1/stream_service_pb.js";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus,
  type HealthCheckResponse,
} from "../../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { HealthRegistry, healthRoutes } from "./health.js";
import { reflectionRoutes } from "./reflection.js";

const chatServices = [AuthService, GroupService, MessageService, StreamService, NotificationService];

const expectedServiceNames = [
  "chat.v1.AuthService",
  "chat.v1.GroupService",
  "chat.v1.MessageService",
  "chat.v1.StreamService",
  "chat.v1.NotificationService",
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

function routes(router: ConnectRouter): void {
  healthRoutes(router, new HealthRegistry());
  reflectionRoutes(router, { services: chatServices });
}

const transport = createRouterTransport(routes);
const v1Client = createClient(v1.ServerReflection, transport);
const v1alphaClient = createClient(v1alpha.ServerReflection, transport);

type V1Request = MessageInitShape<typeof v1.ServerReflectionRequestSchema>;

/** Sends `requests` on one v1 stream and returns all responses. */
async function ask(...requests: V1Request[]): Promise<v1.ServerReflectionResponse[]> {
  async function* input() {
    yield* requests;
  }
  const out: v1.ServerReflectionResponse[] = [];
  for await (const res of v1Client.serverReflectionInfo(input())) out.push(res);
  return out;
}

async function askOne(request: V1Request): Promise<v1.ServerReflectionResponse> {
  const [res, ...rest] = await ask(request);
  assert.equal(rest.length, 0);
  assert.ok(res);
  return res;
}

function decodedFiles(res: v1.ServerReflectionResponse | v1alpha.ServerReflectionResponse): FileDescriptorProto[] {
  assert.equal(res.messageResponse.case, "fileDescriptorResponse", JSON.stringify(res.messageResponse.value));
  return res.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
}

/** The transitive closure of `file`'s imports, by name, computed from the generated descriptors. */
function closure(file: DescFile): Set<string> {
  const names = new Set<string>();
  const visit = (f: DescFile) => {
    if (names.has(f.proto.name)) return;
    names.add(f.proto.name);
    f.dependencies.forEach(visit);
  };
  visit(file);
  return names;
}

/**
 * A FileDescriptorSet in dependency order, as createFileRegistry needs it.
 * Reflection answers put the requested file first (as grpc-go and grpc-java
 * do; grpcurl relies on it), so clients sort before building a registry.
 */
function descriptorSet(files: FileDescriptorProto[]) {
  const byName = new Map(files.map((f) => [f.name, f]));
  const sorted: FileDescriptorProto[] = [];
  const done = new Set<string>();
  const visit = (f: FileDescriptorProto) => {
    if (done.has(f.name)) return;
    done.add(f.name);
    for (const dep of f.dependency) {
      const d = byName.get(dep);
      if (d) visit(d);
    }
    sorted.push(f);
  };
  files.forEach(visit);
  return create(FileDescriptorSetSchema, { file: sorted });
}

function assertNotFound(res: v1.ServerReflectionResponse): void {
  assert.equal(res.messageResponse.case, "errorResponse");
  assert.equal(res.messageResponse.value.errorCode, Code.NotFound);
  assert.equal(res.messageResponse.value.errorCode, 5);
  assert.ok(res.messageResponse.value.errorMessage.length > 0);
}

describe("grpc.reflection.v1.ServerReflection (in process)", () => {
  it("list_services lists the given services, Health and both reflection services; echoes host and request", async () => {
    const res = await askOne({ host: "chat.example:443", messageRequest: { case: "listServices", value: "*" } });
    assert.equal(res.validHost, "chat.example:443");
    assert.equal(res.originalRequest?.host, "chat.example:443");
    assert.deepEqual(res.originalRequest?.messageRequest, { case: "listServices", value: "*" });
    assert.equal(res.messageResponse.case, "listServicesResponse");
    assert.deepEqual(
      res.messageResponse.value.service.map((s) => s.name),
      expectedServiceNames,
    );
  });

  it("omits Health from list_services when health: false", async () => {
    const t = createRouterTransport((r) => reflectionRoutes(r, { services: [MessageService], health: false }));
    const c = createClient(v1.ServerReflection, t);
    async function* one() {
      yield { messageRequest: { case: "listServices" as const, value: "" } };
    }
    const names: string[] = [];
    for await (const res of c.serverReflectionInfo(one())) {
      assert.equal(res.messageResponse.case, "listServicesResponse");
      names.push(...res.messageResponse.value.service.map((s) => s.name));
    }
    assert.deepEqual(names, [
      "chat.v1.MessageService",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);
  });

  it("file_containing_symbol for a service returns its file first, then every transitive import once", async () => {
    const res = await askOne({
      messageRequest: { case: "fileContainingSymbol", value: "chat.v1.MessageService" },
    });
    const files = decodedFiles(res);
    const names = files.map((f) => f.name);
    assert.equal(names[0], "chat/v1/message_service.proto");
    assert.equal(new Set(names).size, names.length, "no file twice");
    assert.deepEqual(new Set(names), closure(file_chat_v1_message_service));
    assert.ok(names.includes("google/protobuf/timestamp.proto"));
    for (const f of files) {
      for (const dep of f.dependency) assert.ok(names.includes(dep), `${f.name} imports ${dep}, which is missing`);
    }
  });

  it("returns descriptors a client can build a registry from and decode real messages with", async () => {
    const res = await askOne({
      messageRequest: { case: "fileContainingSymbol", value: "chat.v1.MessageService" },
    });
    const registry = createFileRegistry(descriptorSet(decodedFiles(res)));
    const service = registry.getService("chat.v1.MessageService");
    assert.ok(service, "chat.v1.MessageService resolvable");
    assert.deepEqual(
      service.methods.map((m) => m.name),
      MessageService.methods.map((m) => m.name),
    );
    const send = service.methods.find((m) => m.name === "SendMessage");
    assert.ok(send);
    assert.equal(send.input.typeName, "chat.v1.SendMessageRequest");
    assert.equal(registry.getMessage("chat.v1.SendMessageRequest"), send.input);
    assert.ok(registry.getMessage("google.protobuf.Timestamp"));

    // Bytes written with the generated schema decode identically with the reflected one.
    const original = create(SendMessageRequestSchema, { groupId: "g1", text: "hi", clientMessageId: "c1" });
    const reflected = fromBinary(send.input, toBinary(SendMessageRequestSchema, original));
    assert.deepEqual(toJson(send.input, reflected), toJson(SendMessageRequestSchema, original));
  });

  it("file_containing_symbol resolves methods, messages, fields, enums, enum values and the platform services", async () => {
    const roleValue = MemberRoleSchema.values[1];
    assert.ok(roleValue);
    const symbols: [string, string][] = [
      ["chat.v1.MessageService.SendMessage", "chat/v1/message_service.proto"],
      [".chat.v1.SendMessageRequest", "chat/v1/message_service.proto"],
      [`chat.v1.SendMessageRequest.${SendMessageRequestSchema.fields[0]?.name}`, "chat/v1/message_service.proto"],
      [MemberRoleSchema.typeName, "chat/v1/group.proto"],
      [`chat.v1.${roleValue.name}`, "chat/v1/group.proto"],
      ["google.protobuf.Timestamp", "google/protobuf/timestamp.proto"],
      ["grpc.health.v1.Health", "grpc/health/v1/health.proto"],
      ["grpc.health.v1.HealthCheckResponse.ServingStatus", "grpc/health/v1/health.proto"],
      ["grpc.health.v1.HealthCheckResponse.SERVING", "grpc/health/v1/health.proto"],
      ["grpc.reflection.v1.ServerReflection.ServerReflectionInfo", "grpc/reflection/v1/reflection.proto"],
      ["grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"],
      ["grpc.reflection.v1.ServerReflectionRequest.message_request", "grpc/reflection/v1/reflection.proto"],
    ];
    const responses = await ask(
      ...symbols.map(([value]) => ({ messageRequest: { case: "fileContainingSymbol" as const, value } })),
    );
    assert.equal(responses.length, symbols.length);
    responses.forEach((res, i) => {
      const [symbol, file] = symbols[i] ?? assert.fail();
      assert.equal(decodedFiles(res)[0]?.name, file, symbol);
      assert.deepEqual(res.originalRequest?.messageRequest, { case: "fileContainingSymbol", value: symbol });
    });
  });

  it("file_by_filename returns the file and its imports; google/protobuf files too", async () => {
    const [byName, wkt] = await ask(
      { messageRequest: { case: "fileByFilename", value: "chat/v1/message_service.proto" } },
      { messageRequest: { case: "fileByFilename", value: "google/protobuf/timestamp.proto" } },
    );
    assert.ok(byName && wkt);
    const names = decodedFiles(byName).map((f) => f.name);
    assert.equal(names[0], "chat/v1/message_service.proto");
    assert.deepEqual(new Set(names), closure(file_chat_v1_message_service));
    assert.deepEqual(
      decodedFiles(wkt).map((f) => f.name),
      ["google/protobuf/timestamp.proto"],
    );
  });

  it("answers NOT_FOUND (5) for unknown symbols and files and keeps the stream open", async () => {
    const responses = await ask(
      { messageRequest: { case: "fileContainingSymbol", value: "chat.v1.NoSuchThing" } },
      { messageRequest: { case: "fileByFilename", value: "chat/v1/nope.proto" } },
      { messageRequest: { case: "fileContainingSymbol", value: "chat.v1" } },
      { messageRequest: { case: "listServices", value: "" } },
    );
    assert.equal(responses.length, 4);
    assertNotFound(responses[0] ?? assert.fail());
    assertNotFound(responses[1] ?? assert.fail());
    assertNotFound(responses[2] ?? assert.fail());
    assert.equal(responses[3]?.messageResponse.case, "listServicesResponse");
  });

  it("extensions: NOT_FOUND for unknown ones, an empty list for a known message, NOT_FOUND for an unknown type", async () => {
    const [ext, nums, unknownType] = await ask(
      {
        messageRequest: {
          case: "fileContainingExtension",
          value: { containingType: "chat.v1.SendMessageRequest", extensionNumber: 100 },
        },
      },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "chat.v1.SendMessageRequest" } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "chat.v1.Nope" } },
    );
    assertNotFound(ext ?? assert.fail());
    assert.equal(nums?.messageResponse.case, "allExtensionNumbersResponse");
    assert.equal(nums.messageResponse.value.baseTypeName, "chat.v1.SendMessageRequest");
    assert.deepEqual(nums.messageResponse.value.extensionNumber, []);
    assertNotFound(unknownType ?? assert.fail());
  });

  it("answers INVALID_ARGUMENT (3) when no message_request is set", async () => {
    const res = await askOne({ host: "h" });
    assert.equal(res.messageResponse.case, "errorResponse");
    assert.equal(res.messageResponse.value.errorCode, Code.InvalidArgument);
    assert.equal(res.validHost, "h");
  });
});

describe("reflection streams without a request for idleTimeoutMs (REFLECTION_IDLE_TIMEOUT)", () => {
  const idle = createRouterTransport((r) => reflectionRoutes(r, { services: [MessageService], idleTimeoutMs: 200 }));
  for (const [name, client] of [
    ["v1", createClient(v1.ServerReflection, idle)],
    ["v1alpha", createClient(v1alpha.ServerReflection, idle)],
  ] as const) {
    it(`${name}: answers requests that come in time, then ends an idle stream with DEADLINE_EXCEEDED`, async () => {
      const hold = new AbortController();
      async function* input() {
        yield { messageRequest: { case: "listServices" as const, value: "" } };
        await new Promise((r) => setTimeout(r, 120));
        yield { messageRequest: { case: "listServices" as const, value: "" } };
        // Then silence, never half-closing.
        await new Promise((r) => hold.signal.addEventListener("abort", r));
      }
      const started = performance.now();
      const answers: string[] = [];
      try {
        await assert.rejects(
          (async () => {
            for await (const res of client.serverReflectionInfo(input())) answers.push(String(res.messageResponse.case));
          })(),
          (e: unknown) => {
            assert.ok(e instanceof ConnectError, String(e));
            assert.equal(e.code, Code.DeadlineExceeded);
            assert.match(e.rawMessage, /no reflection request for 200 ms \(REFLECTION_IDLE_TIMEOUT\)/);
            return true;
          },
        );
      } finally {
        hold.abort();
      }
      const took = performance.now() - started;
      assert.deepEqual(answers, ["listServicesResponse", "listServicesResponse"]);
      assert.ok(took >= 300 && took < 2000, `ended after ${Math.round(took)} ms: 200 ms after the last request`);
    });
  }
});

describe("grpc.reflection.v1alpha.ServerReflection (in process)", () => {
  it("lists the same services and resolves symbols like v1", async () => {
    async function* input() {
      yield { host: "x", messageRequest: { case: "listServices" as const, value: "" } };
      yield { messageRequest: { case: "fileContainingSymbol" as const, value: "chat.v1.StreamService" } };
      yield { messageRequest: { case: "fileContainingSymbol" as const, value: "chat.v1.Missing" } };
    }
    const out: v1alpha.ServerReflectionResponse[] = [];
    for await (const res of v1alphaClient.serverReflectionInfo(input())) out.push(res);
    const [list, file, missing] = out;
    assert.equal(list?.validHost, "x");
    assert.equal(list.messageResponse.case, "listServicesResponse");
    assert.deepEqual(
      list.messageResponse.value.service.map((s) => s.name),
      expectedServiceNames,
    );
    assert.ok(file);
    assert.equal(decodedFiles(file)[0]?.name, "chat/v1/stream_service.proto");
    assert.equal(missing?.messageResponse.case, "errorResponse");
    assert.equal(missing.messageResponse.value.errorCode, 5);
  });
});

describe("health + reflection on a real HTTP/2 server with a @grpc/grpc-js client", () => {
  let server: http2.Http2Server;
  let client: grpc.Client;
  const sessions = new Set<http2.ServerHttp2Session>();

  before(async () => {
    server = http2.createServer(connectNodeAdapter({ routes }));
    server.on("session", (s) => {
      sessions.add(s);
      s.on("close", () => sessions.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  after(async () => {
    client.close();
    const closed = new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    let timer: NodeJS.Timeout | undefined;
    const leak = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`server did not close: ${sessions.size} session(s) leaked`)), 3000);
    });
    try {
      await Promise.race([closed, leak]);
    } finally {
      clearTimeout(timer);
      for (const s of sessions) s.destroy();
    }
  });

  it("grpc.health.v1.Health/Check answers SERVING for the overall status", async () => {
    const res = await new Promise<HealthCheckResponse>((resolve, reject) => {
      client.makeUnaryRequest(
        `/${Health.typeName}/${Health.method.check.name}`,
        (req: MessageInitShape<typeof HealthCheckRequestSchema>) =>
          Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, req))),
        (buf: Buffer) => fromBinary(HealthCheckResponseSchema, buf),
        { service: "" },
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        (err, value) => (err || !value ? reject(err ?? new Error("no response")) : resolve(value)),
      );
    });
    assert.equal(res.status, HealthCheckResponse_ServingStatus.SERVING);
  });

  it("grpc.health.v1.Health/Check answers NOT_FOUND for an unknown service", async () => {
    const err = await new Promise<grpc.ServiceError>((resolve, reject) => {
      client.makeUnaryRequest(
        `/${Health.typeName}/${Health.method.check.name}`,
        (req: MessageInitShape<typeof HealthCheckRequestSchema>) =>
          Buffer.from(toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, req))),
        (buf: Buffer) => fromBinary(HealthCheckResponseSchema, buf),
        { service: "no.such.Service" },
        new grpc.Metadata(),
        { deadline: Date.now() + 5000 },
        (e, value) => (e ? resolve(e) : reject(new Error(`unexpected success: ${JSON.stringify(value)}`))),
      );
    });
    assert.equal(err.code, grpc.status.NOT_FOUND);
  });

  it("grpc.reflection.v1 bidi stream answers list_services and file_containing_symbol", async () => {
    const call = client.makeBidiStreamRequest(
      `/${v1.ServerReflection.typeName}/${v1.ServerReflection.method.serverReflectionInfo.name}`,
      (req: V1Request) =>
        Buffer.from(toBinary(v1.ServerReflectionRequestSchema, create(v1.ServerReflectionRequestSchema, req))),
      (buf: Buffer) => fromBinary(v1.ServerReflectionResponseSchema, buf),
      new grpc.Metadata(),
      { deadline: Date.now() + 5000 },
    );
    const responses = new Promise<v1.ServerReflectionResponse[]>((resolve, reject) => {
      const out: v1.ServerReflectionResponse[] = [];
      call.on("data", (r: v1.ServerReflectionResponse) => out.push(r));
      call.on("error", reject);
      call.on("end", () => resolve(out));
    });
    call.write({ messageRequest: { case: "listServices", value: "" } });
    call.write({ messageRequest: { case: "fileContainingSymbol", value: "chat.v1.MessageService" } });
    call.end();
    const [list, files] = await responses;
    assert.equal(list?.messageResponse.case, "listServicesResponse");
    assert.deepEqual(
      list.messageResponse.value.service.map((s) => s.name),
      expectedServiceNames,
    );
    assert.ok(files);
    const registry = createFileRegistry(descriptorSet(decodedFiles(files)));
    assert.equal(registry.getService("chat.v1.MessageService")?.method.sendMessage?.input.typeName, "chat.v1.SendMessageRequest");
  });
});
