// Checks the routing and token rules of envoy.yaml (as JSON) against the API in proto/chat/v1:
// every chat.v1 RPC must reach its service's cluster, Register/Login/RefreshToken must be open,
// every other chat.v1 RPC must require the JWT provider, and the stream RPCs must have no route
// timeout; Subscribe and Connect over WebSocket (upgrade requests) must reach the HTTP/1.1 stream
// cluster with upgrades enabled on that route only, the web app (/, /assets/) must be open, and the token must also be read from the subprotocol.
// A service missing from CLUSTER below fails the check (so a new service cannot pass unrouted), and
// every route must name a defined cluster.
// It re-implements Envoy's prefix/path and exact header matching (case-sensitive paths, first
// match wins), so it checks the intent of the config, not Envoy itself.
//
//   node envoy/check/check-routes.mjs <envoy.json>
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../..", import.meta.url).pathname;
const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const hcm = config.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
const routes = hcm.route_config.virtual_hosts[0].routes;
const jwt = hcm.http_filters.find((f) => f.name === "envoy.filters.http.jwt_authn").typed_config;

// safe_regex: RE2 against the whole path (the patterns used here mean the same in JavaScript).
const matchesPath = (m, path) =>
  m.path !== undefined
    ? m.path === path
    : m.prefix !== undefined
      ? path.startsWith(m.prefix)
      : m.safe_regex !== undefined
        ? new RegExp(`^(?:${m.safe_regex.regex})$`).test(path)
        : false;
const headerMatches = (h, headers) => {
  const value = headers[h.name];
  if (value === undefined) return false;
  const want = h.string_match?.exact;
  if (want === undefined) throw new Error(`check-routes.mjs understands only exact header matches (${h.name})`);
  return h.string_match.ignore_case ? value.toLowerCase() === want.toLowerCase() : value === want;
};
const matches = (m, path, headers = {}) => matchesPath(m, path) && (m.headers ?? []).every((h) => headerMatches(h, headers));
const routeFor = (path, headers = {}) => routes.find((r) => matches(r.match, path, headers));
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
const CLUSTER = { AuthService: "auth", GroupService: "group", MessageService: "message", StreamService: "stream", NotificationService: "notify" };
const problems = [];
for (const { service, method } of rpcs) {
  const path = `/chat.v1.${service}/${method}`;
  const route = routeFor(path);
  const rule = ruleFor(path);
  const needsToken = Boolean(rule?.requires);
  const open = OPEN.has(`${service}/${method}`);
  console.log(`${path.padEnd(52)} -> ${route?.route?.cluster ?? "NO ROUTE"}, ${needsToken ? "token required" : "open"}`);
  if (CLUSTER[service] === undefined) problems.push(`${path}: service ${service} has no cluster in check-routes.mjs (add it to CLUSTER)`);
  else if (route?.route?.cluster !== CLUSTER[service]) problems.push(`${path}: routed to ${route?.route?.cluster}, expected ${CLUSTER[service]}`);
  if (open === needsToken) problems.push(`${path}: ${needsToken ? "requires a token but must be open" : "open but must require a token"}`);
  if (service === "StreamService" && route?.route?.timeout !== "0s") problems.push(`${path}: stream route must have timeout 0s`);
}
// Subscribe and Connect over WebSocket: the upgrade goes to the HTTP/1.1 cluster, with upgrades enabled
// there (and off at the HCM), no timeout, and the token also taken from a `bearer.` subprotocol.
const upgradeOn = (list) => (list ?? []).find((u) => u.upgrade_type === "websocket")?.enabled;
const wsRoutes = new Set();
for (const wsPath of ["/chat.v1.StreamService/Subscribe", "/chat.v1.StreamService/Connect"]) {
  const wsRoute = routeFor(wsPath, { upgrade: "WebSocket" });
  wsRoutes.add(wsRoute);
  console.log(`${`${wsPath} (WebSocket)`.padEnd(52)} -> ${wsRoute?.route?.cluster ?? "NO ROUTE"}, ${ruleFor(wsPath)?.requires ? "token required" : "open"}`);
  if (wsRoute?.route?.cluster !== "stream_ws") problems.push(`${wsPath} (WebSocket): routed to ${wsRoute?.route?.cluster}, expected stream_ws`);
  if (upgradeOn(wsRoute?.route?.upgrade_configs) !== true) problems.push(`${wsPath} (WebSocket): the route must enable websocket upgrades`);
  if (wsRoute?.route?.timeout !== "0s") problems.push(`${wsPath} (WebSocket): stream route must have timeout 0s`);
  if (!ruleFor(wsPath)?.requires) problems.push(`${wsPath} (WebSocket): must require a token`);
}
if (upgradeOn(hcm.upgrade_configs) !== false) problems.push("websocket upgrades must be disabled at the connection manager (enabled per route)");
for (const r of routes) {
  if (!wsRoutes.has(r) && upgradeOn(r.route?.upgrade_configs) === true) problems.push(`route ${r.name}: enables websocket upgrades`);
}
// The web app: `/` and `/assets/...` reach a service process with no token (a browser loading a page sends none).
for (const p of ["/", "/assets/main-0123abcd.js"]) {
  const r = routeFor(p);
  console.log(`${p.padEnd(52)} -> ${r?.route?.cluster ?? "NO ROUTE"}, ${ruleFor(p)?.requires ? "token required" : "open"}`);
  if (r?.route?.cluster === undefined) problems.push(`${p}: the web app must be routed`);
  if (ruleFor(p)?.requires) problems.push(`${p}: the web app must be open`);
}
const cluster = config.static_resources.clusters.find((c) => c.name === "stream_ws");
const opts = cluster?.typed_extension_protocol_options?.["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]?.explicit_http_config;
if (!opts?.http_protocol_options) problems.push("cluster stream_ws: must speak HTTP/1.1 upstream (the services take WebSocket upgrades on HTTP/1.1 only)");
const provider = jwt.providers.chat;
if (!provider.from_headers.some((h) => h.name === "sec-websocket-protocol" && h.value_prefix === "bearer.")) {
  problems.push("jwt provider: must also read the token from a `bearer.` WebSocket subprotocol (browsers cannot set headers)");
}
if (provider.forward !== true) problems.push("jwt provider: forward must be true (else jwt_authn deletes Sec-WebSocket-Protocol, chat.v1.proto included)");
// Every route's cluster is defined (Envoy refuses a config whose route names an unknown static cluster).
const clusterNames = new Set(config.static_resources.clusters.map((c) => c.name));
for (const r of routes) {
  if (r.route?.cluster !== undefined && !clusterNames.has(r.route.cluster)) problems.push(`route ${r.name}: cluster ${r.route.cluster} is not defined`);
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
