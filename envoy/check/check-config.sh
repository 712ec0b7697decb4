#!/usr/bin/env bash
# Checks envoy/envoy.yaml against Envoy's v3 API protos, without Envoy or Docker:
#   - YAML parses (PyYAML),
#   - every field, enum value and "@type" exists (strict proto JSON parse of the whole Bootstrap),
#   - the protoc-gen-validate rules a JSON parse does not see (required fields/oneofs, minimums,
#     ranges), and deprecated fields (reported as warnings),
#   - that every chat.v1 RPC is routed to its cluster with the intended token rule (check-routes.mjs).
# See check-config.mjs for exactly what is and is not checked.
#
# Needs: node (with this repo's node_modules: @bufbuild/protobuf and buf), python3 with PyYAML,
# and the npm registry (the Envoy API protos come from the @grpc/grpc-js-xds package, which
# bundles them; nothing is installed into the repo).
#
#   envoy/check/check-config.sh [path/to/envoy.yaml]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
config="${1:-$root/envoy/envoy.yaml}"
# Pinned: the Envoy API snapshot these protos come from. Fields newer than it are reported as
# unknown (a false alarm), so bump it together with the Envoy image when needed.
xds_pkg="@grpc/grpc-js-xds@1.14.1"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== YAML: $config"
python3 -c 'import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), open(sys.argv[2], "w"))' \
  "$config" "$work/envoy.json"

echo "== Envoy API protos from $xds_pkg"
(cd "$work" && npm pack --silent "$xds_pkg" >/dev/null && tar xzf grpc-grpc-js-xds-*.tgz)
deps="$work/package/deps"
# The bundled protoc-gen-validate predates `ignore_empty`, which newer Envoy protos use.
# (The file has CRLF line ends.)
sed -i 's|^  optional bool strict = 25 \[default = true\];\r\?$|&\n  optional bool ignore_empty = 26;|' \
  "$deps/protoc-gen-validate/validate/validate.proto"
grep -q 'ignore_empty = 26' "$deps/protoc-gen-validate/validate/validate.proto"
cat > "$deps/buf.yaml" <<'EOF'
version: v2
modules:
  - path: envoy-api
  - path: xds
  - path: googleapis
  - path: protoc-gen-validate
    excludes: [protoc-gen-validate/tests, protoc-gen-validate/java]
EOF
# The bootstrap and every extension envoy.yaml names in an "@type".
(cd "$deps" && "$root/node_modules/.bin/buf" build -o "$work/envoy.binpb" \
  --path envoy-api/envoy/config/bootstrap/v3/bootstrap.proto \
  --path envoy-api/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto \
  --path envoy-api/envoy/extensions/filters/http/cors/v3/cors.proto \
  --path envoy-api/envoy/extensions/filters/http/grpc_web/v3/grpc_web.proto \
  --path envoy-api/envoy/extensions/filters/http/jwt_authn/v3/config.proto \
  --path envoy-api/envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto \
  --path envoy-api/envoy/extensions/filters/http/router/v3/router.proto \
  --path envoy-api/envoy/extensions/upstreams/http/v3/http_protocol_options.proto \
  --path envoy-api/envoy/extensions/access_loggers/stream/v3/stream.proto \
  --path envoy-api/envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.proto \
  --path envoy-api/envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto)

echo "== Bootstrap"
node "$root/envoy/check/check-config.mjs" "$work/envoy.binpb" "$work/envoy.json"

echo "== Routes and token rules against proto/chat/v1"
node "$root/envoy/check/check-routes.mjs" "$work/envoy.json"
