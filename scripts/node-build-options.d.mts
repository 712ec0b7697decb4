import type { BuildOptions } from "esbuild";
export declare const NODE_BUILD: Readonly<Pick<BuildOptions, "format" | "platform" | "target" | "sourcemap" | "logLevel">>;
