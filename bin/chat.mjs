#!/usr/bin/env node
// chat: launcher of the command-line client (services/cli/main.ts). It
// registers tsx's ESM loader in this process and imports the TypeScript
// entry point, so there is no child process, signals (Ctrl-C in `chat tail`)
// reach the client directly, and the exit code is the client's own.
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { register } from "tsx/esm/api";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
register({ tsconfig: join(root, "tsconfig.json") });
await import(pathToFileURL(join(root, "services", "cli", "main.ts")).href);
