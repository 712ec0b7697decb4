/**
 * The layers of services/ and the one direction of their imports (docs/architecture.md, "Layers"):
 *
 *   core/  <-  auth/ group/ message/ notifier/  <-  delivery/  <-  rpc/  <-  wire/  <-  server/  <-  main.ts, migrate.ts
 *   adapters/*  ->  core/ only        cli/  ->  core/, gen/ and clients/typescript (@chat/client) only
 *   nothing under services/ imports test/
 *
 * A layer may import any lower layer, never a higher one; no module imports itself through others. Type-only
 * imports count (tsPreCompilationDeps): a type is a dependency as much as a value is. `npm run check:layers` runs
 * this; CI runs it right after buf lint.
 *
 * Specs (*.spec.ts) sit beside their module and keep its layer's rule, except that they may also build fixtures
 * from adapters/ and test/ (test/support, test/contract): nothing imports a spec.
 */
const SPEC = "\\.spec\\.ts$";
/** TOP is services/main.ts and services/migrate.ts: the entry points, which may import anything. */
const TOP = "^services/[^/]+\\.ts$";
const USE_CASES = "(auth|group|message|notifier)";

/**
 * layer is the rule of one layer, `from` (a path pattern), given what it must not import (`forbidden`, path
 * patterns): for its modules, also adapters/ (unless `adapters`, i.e. server/); its specs may use adapters/.
 */
function layer(name, comment, from, forbidden, { adapters = false } = {}) {
  const never = [...forbidden, TOP];
  return [
    { name, comment, severity: "error", from: { path: from, pathNot: SPEC }, to: { path: adapters ? never : [...never, "^services/adapters/"] } },
    { name: `${name} (specs)`, comment, severity: "error", from: { path: `${from}.*${SPEC}` }, to: { path: never } },
  ];
}

/** above lists the folders of the layers above the given one, as path patterns. */
const above = (...folders) => folders.map((f) => `^services/${f}/`);

module.exports = {
  forbidden: [
    {
      name: "no-circular",
      comment: "No module imports itself through others.",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "no-test-code-in-services",
      comment: "Nothing under services/ but a spec imports test/ (fixtures and helpers live in test/support).",
      severity: "error",
      from: { path: "^services/", pathNot: SPEC },
      to: { path: "^test/" },
    },
    ...layer(
      "core-imports-only-core",
      "core/ (model, ports, rules) imports nothing of ours outside core/, and no generated code.",
      "^services/core/",
      ["^services/(?!core/|adapters/)", "^gen/"],
    ),
    ...layer(
      "use-cases-import-only-core",
      "A use-case folder (auth/, group/, message/, notifier/) imports core/ and itself only: no other use-case, no gen/.",
      `^services/${USE_CASES}/`,
      // $1: the use-case folder of the importing module (dependency-cruiser's group matching).
      ["^services/(?!core/|adapters/|$1/)", "^gen/"],
    ),
    ...layer(
      "delivery-not-above",
      "delivery/ (the hub, outbound items, frame building) imports core/ and the use-cases, never rpc/, wire/, server/.",
      "^services/delivery/",
      above("rpc", "wire", "server", "cli"),
    ),
    ...layer(
      "rpc-not-above",
      "rpc/ (connect routes, interceptors, error mapping) never imports wire/ or server/.",
      "^services/rpc/",
      above("wire", "server", "cli"),
    ),
    ...layer(
      "wire-not-above",
      "wire/ (the front door, the hand-framed paths, the WebSocket) never imports server/.",
      "^services/wire/",
      above("server", "cli"),
    ),
    ...layer("server-not-top", "server/ wires everything below it, adapters included.", "^services/server/", above("cli"), {
      adapters: true,
    }),
    {
      name: "adapters-import-only-core",
      comment: "An adapter imports core/ and its own folder only: no other adapter, no layer above core/, no gen/.",
      severity: "error",
      from: { path: "^services/adapters/([^/]+)", pathNot: SPEC },
      to: { path: ["^services/", "^gen/"], pathNot: "^services/(core/|adapters/$1)" },
    },
    {
      name: "adapters-import-only-core (specs)",
      comment: "An adapter's spec may also use other adapters (and test/) for fixtures.",
      severity: "error",
      from: { path: `^services/adapters/.*${SPEC}` },
      to: { path: ["^services/", "^gen/"], pathNot: "^services/(core|adapters)/" },
    },
    {
      name: "cli-is-a-client",
      comment:
        "cli/ (the `chat` client) is a client, not a layer of the server: it talks to a server through @chat/client (clients/typescript, allowed: it is outside services/) and the generated code; of services/ it may use core/ only.",
      severity: "error",
      from: { path: "^services/cli/" },
      to: { path: "^services/", pathNot: "^services/(core|cli)/" },
    },
    {
      name: "nothing-imports-the-top",
      comment: "services/main.ts and services/migrate.ts are entry points: nothing imports them.",
      severity: "error",
      from: { path: "^services/" },
      to: { path: TOP },
    },
  ],
  options: {
    doNotFollow: { path: ["node_modules", "^gen/", "^test/"] },
    exclude: { path: ["node_modules"] },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"] },
    cache: false,
  },
};
