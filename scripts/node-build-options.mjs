/**
 * NODE_BUILD is how this project compiles TypeScript to run on Node: esbuild
 * strips the types module by module, no bundling, no keepNames (see
 * build-server.mjs for why not tsx). The server build (build-server.mjs) and
 * the bench's reference server (bench/lib/servers.ts) both use it, so a
 * comparison of the two runs both compiled the same way.
 */
export const NODE_BUILD = Object.freeze({
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: "linked",
  logLevel: "warning",
});
