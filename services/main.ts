/**
 * main runs the whole chat backend in one process on the embedded defaults
 * (SQLite, in-process bus and cache), configured only by environment
 * variables (see server/config.ts). SIGTERM or SIGINT shut it down
 * gracefully; a second signal during the shutdown is ignored.
 */
import { startApp } from "./server/app.js";
import { ConfigError, argsToEnv, loadConfig } from "./server/config.js";
import { setHeapGrowingPercent, turnOffPretenuring } from "./server/gc-tuning.js";

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
  setHeapGrowingPercent(config.heapGrowingPercent);
  const app = await startApp(config);
  // The first SIGTERM or SIGINT starts the graceful stop; later ones are ignored, never the default "die now":
  // Ctrl-C on `npm start` delivers SIGINT twice (the terminal signals the whole process group, and npm passes its
  // own on), and dying on the second would cut the stop short. The stop is bounded by SHUTDOWN_GRACE; SIGKILL
  // still ends the process at once.
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`chat server failed to start: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
