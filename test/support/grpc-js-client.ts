/**
 * grpc-js clients built from protobuf-es descriptors, as a mobile app's
 * generated stubs would talk to the server: plain gRPC over HTTP/2.
 */
import { type DescMethod, type DescService, type MessageInitShape, create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";

/** GrpcJsClient is a grpc-js client with one method per RPC (named by the RPC's local name). */
export type GrpcJsClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

/**
 * grpcJsClient connects (requests may be plain init objects; they are completed with protobuf-es `create`) a grpc-js
 * client for `service` to 127.0.0.1:port, in cleartext unless `credentials` say TLS (grpc.credentials.createSsl).
 */
export function grpcJsClient(
  port: number,
  service: DescService,
  options: grpc.ClientOptions = {},
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
): GrpcJsClient {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: (m: unknown) => Buffer.from(toBinary(method.input, create(method.input, m as MessageInitShape<DescMethod["input"]>))),
      requestDeserialize: (b: Buffer) => fromBinary(method.input, b),
      responseSerialize: (m: unknown) => Buffer.from(toBinary(method.output, create(method.output, m as MessageInitShape<DescMethod["output"]>))),
      responseDeserialize: (b: Buffer) => fromBinary(method.output, b),
    };
  }
  const Ctor = grpc.makeGenericClientConstructor(definition, service.name);
  return new Ctor(`127.0.0.1:${port}`, credentials, options) as unknown as GrpcJsClient;
}

/** authMetadata returns metadata carrying `authorization: Bearer <token>`. */
export function authMetadata(token: string | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  if (token !== undefined) md.set("authorization", `Bearer ${token}`);
  return md;
}

/** unary calls a unary method and resolves with the response, or rejects with the grpc-js ServiceError. */
export function unary<Res>(client: GrpcJsClient, method: string, request: unknown, metadata = new grpc.Metadata()): Promise<Res> {
  return new Promise((resolve, reject) => {
    const fn = client[method];
    if (!fn) throw new Error(`no method ${method}`);
    fn.call(client, request, metadata, (err: grpc.ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
  });
}
