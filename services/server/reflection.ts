// gRPC server reflection (grpc.reflection.v1 and v1alpha) for connect-node,
// over protobuf-es v2 descriptors. connect-node has no reflection package;
// this is enough for grpcurl, buf curl, grpcui and Postman.
//
// Protocol: https://github.com/grpc/grpc/blob/master/doc/server-reflection.md

import { toBinary, type DescFile, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/**
 * ReflectionOptions says what reflection describes.
 * - `services`: the application services to list (fully qualified names, in
 *   this order). Their files and all transitive imports are served.
 * - `health` (default true): also list grpc.health.v1.Health; set false when
 *   health routes are not registered.
 * - `files`: extra files to serve without listing a service (e.g. types that
 *   travel inside google.protobuf.Any).
 * - `idleTimeoutMs` (default none): a stream that receives no request for
 *   this long ends with DEADLINE_EXCEEDED (REFLECTION_IDLE_TIMEOUT), so a
 *   client without a token cannot hold one open forever.
 * The reflection services (v1 and v1alpha) are always listed and described.
 */
export interface ReflectionOptions {
  readonly services: readonly DescService[];
  readonly health?: boolean;
  readonly files?: readonly DescFile[];
  readonly idleTimeoutMs?: number;
}

/**
 * withIdleTimeout yields the requests of `requests` and throws ConnectError
 * DeadlineExceeded when none comes for `ms` (counted from the stream's start
 * and from each request; the time spent answering one is not idle).
 */
async function* withIdleTimeout<T>(requests: AsyncIterable<T>, ms: number | undefined): AsyncGenerator<T, void, undefined> {
  if (ms === undefined) {
    yield* requests;
    return;
  }
  const it = requests[Symbol.asyncIterator]();
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<"idle">((resolve) => {
        timer = setTimeout(() => resolve("idle"), ms);
      });
      const next = await Promise.race([it.next(), idle]).finally(() => clearTimeout(timer));
      if (next === "idle") {
        throw new ConnectError(`no reflection request for ${ms} ms (REFLECTION_IDLE_TIMEOUT); open a new stream`, Code.DeadlineExceeded);
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    // Not awaited: a next() still pending would hold the return until the client sends again.
    void it.return?.()?.catch(() => {});
  }
}

type Answer =
  | { readonly kind: "files"; readonly files: readonly Uint8Array[] }
  | { readonly kind: "extensionNumbers"; readonly baseTypeName: string; readonly numbers: readonly number[] }
  | { readonly kind: "services"; readonly names: readonly string[] }
  | { readonly kind: "error"; readonly code: Code; readonly message: string };

/** The request fields both protocol versions share (same field numbers). */
type AnyRequest = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

/**
 * Index of everything reflection can describe, built once per
 * reflectionRoutes call; descriptors are immutable so answers never change.
 */
class ReflectionIndex {
  readonly serviceNames: readonly string[];
  readonly #fileByName = new Map<string, DescFile>();
  readonly #fileBySymbol = new Map<string, DescFile>();
  readonly #messageByName = new Map<string, DescMessage>();
  /** `${extendee}:${number}` → file declaring the extension. */
  readonly #fileByExtension = new Map<string, DescFile>();
  readonly #extensionNumbers = new Map<string, number[]>();
  readonly #bytes = new Map<DescFile, Uint8Array>();

  constructor(opts: ReflectionOptions) {
    const listed: DescService[] = [...opts.services];
    if (opts.health ?? true) listed.push(Health);
    listed.push(v1.ServerReflection, v1alpha.ServerReflection);
    const names: string[] = [];
    for (const s of listed) {
      if (!names.includes(s.typeName)) names.push(s.typeName);
      this.#addFile(s.file);
    }
    for (const f of opts.files ?? []) this.#addFile(f);
    this.serviceNames = names;
  }

  answer(req: AnyRequest): Answer {
    const r = req.messageRequest;
    switch (r.case) {
      case "listServices":
        return { kind: "services", names: this.serviceNames };
      case "fileByFilename": {
        const file = this.#fileByName.get(r.value);
        return file ? this.#files(file) : notFound(`file not found: ${r.value}`);
      }
      case "fileContainingSymbol": {
        const name = stripDot(r.value);
        const file = this.#fileBySymbol.get(name);
        return file ? this.#files(file) : notFound(`symbol not found: ${name}`);
      }
      case "fileContainingExtension": {
        const type = stripDot(r.value.containingType);
        const file = this.#fileByExtension.get(`${type}:${r.value.extensionNumber}`);
        return file
          ? this.#files(file)
          : notFound(`extension not found: ${type} field ${r.value.extensionNumber}`);
      }
      case "allExtensionNumbersOfType": {
        const type = stripDot(r.value);
        if (!this.#messageByName.has(type)) return notFound(`message type not found: ${type}`);
        return { kind: "extensionNumbers", baseTypeName: type, numbers: this.#extensionNumbers.get(type) ?? [] };
      }
      case undefined:
        return { kind: "error", code: Code.InvalidArgument, message: "message_request is not set" };
    }
  }

  /** The file first, then its transitive imports, each once. */
  #files(file: DescFile): Answer {
    const out: Uint8Array[] = [];
    const seen = new Set<DescFile>();
    const visit = (f: DescFile) => {
      if (seen.has(f)) return;
      seen.add(f);
      out.push(this.#serialize(f));
      for (const dep of f.dependencies) visit(dep);
    };
    visit(file);
    return { kind: "files", files: out };
  }

  #serialize(file: DescFile): Uint8Array {
    let bytes = this.#bytes.get(file);
    if (bytes === undefined) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.#bytes.set(file, bytes);
    }
    return bytes;
  }

  #addFile(file: DescFile): void {
    const fileName = file.proto.name;
    if (this.#fileByName.has(fileName)) return;
    this.#fileByName.set(fileName, file);
    const pkg = file.proto.package;
    const sym = (name: string) => {
      if (!this.#fileBySymbol.has(name)) this.#fileBySymbol.set(name, file);
    };
    const addEnum = (e: DescFile["enums"][number]) => {
      sym(e.typeName);
      // Enum values are scoped as siblings of their enum (C++ scoping rules).
      const scope = e.parent?.typeName ?? pkg;
      for (const v of e.values) sym(scope === "" ? v.name : `${scope}.${v.name}`);
    };
    const addExtension = (x: DescFile["extensions"][number]) => {
      sym(x.typeName);
      this.#fileByExtension.set(`${x.extendee.typeName}:${x.number}`, file);
      const nums = this.#extensionNumbers.get(x.extendee.typeName) ?? [];
      if (!nums.includes(x.number)) nums.push(x.number);
      this.#extensionNumbers.set(x.extendee.typeName, nums);
    };
    const addMessage = (m: DescMessage) => {
      sym(m.typeName);
      if (!this.#messageByName.has(m.typeName)) this.#messageByName.set(m.typeName, m);
      for (const f of m.fields) sym(`${m.typeName}.${f.name}`);
      for (const o of m.oneofs) sym(`${m.typeName}.${o.name}`);
      m.nestedEnums.forEach(addEnum);
      m.nestedMessages.forEach(addMessage);
      m.nestedExtensions.forEach(addExtension);
    };
    file.messages.forEach(addMessage);
    file.enums.forEach(addEnum);
    file.extensions.forEach(addExtension);
    for (const s of file.services) {
      sym(s.typeName);
      for (const m of s.methods) sym(`${s.typeName}.${m.name}`);
    }
    for (const dep of file.dependencies) this.#addFile(dep);
  }
}

function notFound(message: string): Answer {
  return { kind: "error", code: Code.NotFound, message };
}

function stripDot(name: string): string {
  return name.startsWith(".") ? name.slice(1) : name;
}

/**
 * The oneof of ServerReflectionResponse. v1 and v1alpha init shapes are
 * structurally identical (no $typeName), so one value serves both.
 */
type MessageResponseInit =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

function messageResponse(a: Answer): MessageResponseInit {
  switch (a.kind) {
    case "files":
      return { case: "fileDescriptorResponse", value: { fileDescriptorProto: [...a.files] } };
    case "extensionNumbers":
      return {
        case: "allExtensionNumbersResponse",
        value: { baseTypeName: a.baseTypeName, extensionNumber: [...a.numbers] },
      };
    case "services":
      return { case: "listServicesResponse", value: { service: a.names.map((name) => ({ name })) } };
    case "error":
      return { case: "errorResponse", value: { errorCode: a.code, errorMessage: a.message } };
  }
}

/**
 * reflectionRoutes registers grpc.reflection.v1.ServerReflection and
 * grpc.reflection.v1alpha.ServerReflection on `router`, both answering from
 * the same index built from `opts`.
 *
 * Guarantees, per request on the bidi stream (one response per request, in
 * order; the stream ends when the client half-closes or cancels):
 * - Every response echoes `original_request` and sets `valid_host` to the
 *   request's `host`.
 * - list_services: the names of `opts.services`, then grpc.health.v1.Health
 *   (unless `opts.health === false`), then both reflection services.
 * - file_by_filename / file_containing_symbol: serialized FileDescriptorProtos
 *   of the file and all its transitive imports (requested file first, each
 *   once; google/protobuf/*.proto included). Symbols are fully qualified
 *   names of services, methods, messages, fields, oneofs, enums, enum values
 *   and extensions; a leading "." is ignored. Every response carries the full
 *   closure (no per-stream de-duplication), so clients may resolve each
 *   answer on its own.
 * - file_containing_extension: the declaring file if a known extension
 *   matches, else error_response NOT_FOUND.
 * - all_extension_numbers_of_type: the known extension numbers of a known
 *   message (often empty); NOT_FOUND for an unknown type.
 * - Unknown file or symbol: error_response with error_code 5 (NOT_FOUND);
 *   a request with no message_request: error_code 3 (INVALID_ARGUMENT).
 *   Errors never end the stream.
 * - A stream idle (no request) for `opts.idleTimeoutMs` ends with
 *   DEADLINE_EXCEEDED; open streams also count against the front door's
 *   MAX_OPEN_CALLS_WITHOUT_TOKEN.
 */
export function reflectionRoutes(router: ConnectRouter, opts: ReflectionOptions): ConnectRouter {
  const index = new ReflectionIndex(opts);
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of withIdleTimeout(requests, opts.idleTimeoutMs)) {
        yield { validHost: req.host, originalRequest: req, messageResponse: messageResponse(index.answer(req)) };
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of withIdleTimeout(requests, opts.idleTimeoutMs)) {
        yield { validHost: req.host, originalRequest: req, messageResponse: messageResponse(index.answer(req)) };
      }
    },
  });
  return router;
}
