// Checks the routing and token rules of envoy.yaml (as JSON) against the API in proto/chat/v1:
// every chat.v1 RPC must reach its service's cluster, Register/Login/RefreshToken must be open,
// every other chat.v1 RPC must require the JWT provider, and the stream RPCs must have no route
// timeout. It re-implements Envoy's prefix/path matching (case-sensitive, first match wins), so it
// checks the intent of the config, not Envoy itself.
//
//   node envoy/check/check-routes.mjs <envoy.json>
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../..", import.meta.url).pathname;
const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const hcm = config.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
const routes = hcm.route_config.virtual_hosts[0].routes;
const jwt = hcm.http_filters.find((f) => f.name === "envoy.filters.http.jwt_authn").typed_config;

const matches = (m, path) => (m.path !== undefined ? m.path === path : m.prefix !== undefined ? path.startsWith(m.prefix) : false);
const routeFor = (path) => routes.find((r) => matches(r.match, path));
const ruleFor = (path) => jwt.rules.find((r) => matches(r.match, path));

// Every RPC of every service in proto/chat/v1.
const rpcs = [];
const protoDir = join(root, "proto/chat/v1");
for (const file of readdirSync(protoDir).filter((f) => f.endsWith(".proto"))) {
  const text = readFileSync(join(protoDir, file), "utf8");
  for (const svc of text.matchAll(/service\s+(\w+)\s*\{([\s\S]*?)\n\}/g)) {
    for (const rpc of svc[2].matchAll(/rpc\s+(\w+)\s*\(/g)) rpcs.push({ service: svc[1], method: rpc[1] });
  }
}
if (rpcs.length === 0) throw new Error("no RPCs found in proto/chat/v1");

const OPEN = new Set(["AuthService/Register", "AuthService/Login", "AuthService/RefreshToken"]);
const CLUSTER = { AuthService: "auth", GroupService: "group", MessageService: "message", StreamService: "stream" };
const problems = [];
for (const { service, method } of rpcs) {
  const path = `/chat.v1.${service}/${method}`;
  const route = routeFor(path);
  const rule = ruleFor(path);
  const needsToken = Boolean(rule?.requires);
  const open = OPEN.has(`${service}/${method}`);
  console.log(`${path.padEnd(44)} -> ${route?.route?.cluster ?? "NO ROUTE"}, ${needsToken ? "token required" : "open"}`);
  if (route?.route?.cluster !== CLUSTER[service]) problems.push(`${path}: routed to ${route?.route?.cluster}, expected ${CLUSTER[service]}`);
  if (open === needsToken) problems.push(`${path}: ${needsToken ? "requires a token but must be open" : "open but must require a token"}`);
  if (service === "StreamService" && route?.route?.timeout !== "0s") problems.push(`${path}: stream route must have timeout 0s`);
}
// Paths that are not RPCs.
const jwks = "/.well-known/jwks.json";
if (routeFor(jwks)?.route?.cluster !== "auth" || ruleFor(jwks)?.requires) problems.push(`${jwks}: must go to auth without a token`);
for (const p of ["/.well-known/other", "/grpc.health.v1.Health/Check", "/chat.v2.GroupService/ListGroups", "/CHAT.V1.GroupService/ListGroups"]) {
  if (routeFor(p)) problems.push(`${p}: unexpectedly routed to ${routeFor(p).route.cluster}`);
}
for (const p of problems) console.log(`ERROR: ${p}`);
if (problems.length > 0) process.exit(1);
console.log(`OK: ${rpcs.length} RPCs routed and protected as intended`);
