/**
 * main runs the whole chat backend in one process on the embedded defaults
 * (SQLite, in-process bus and cache), configured only by environment
 * variables (see platform/config.ts). SIGTERM or SIGINT shut it down
 * gracefully.
 */
import { ConfigError, argsToEnv, loadConfig } from "./platform/config.js";
import { startApp } from "./platform/app.js";
import { turnOffPretenuring } from "./platform/gc-tuning.js";

async function main(): Promise<void> {
  turnOffPretenuring();
  let config;
  try {
    config = loadConfig({ ...process.env, ...argsToEnv(process.argv.slice(2)) });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const app = await startApp(config);
  const stop = () => {
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`chat server failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
