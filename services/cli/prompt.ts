/** Password input without echo, for register and login on a terminal. */
import { Canceled } from "./errors.js";

/**
 * promptHidden asks on stderr and reads one line from the terminal in raw
 * mode, echoing nothing. Backspace and Ctrl-U edit, Enter or Ctrl-D end,
 * Ctrl-C throws Canceled. Returns undefined when stdin is not a terminal.
 */
export function promptHidden(question: string): Promise<string | undefined> {
  const stdin = process.stdin;
  if (!stdin.isTTY) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    let value = "";
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.setEncoding("utf8");
    const finish = (error?: Error) => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
      if (error) reject(error);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk.replace(/\u001b\[20[01]~/g, "")) {
        if (ch === "\r" || ch === "\n" || ch === "\u0004") return finish();
        if (ch === "\u0003") return finish(new Canceled("canceled"));
        if (ch === "\u007f" || ch === "\b") value = [...value].slice(0, -1).join("");
        else if (ch === "\u0015") value = "";
        else if (ch >= " ") value += ch;
      }
    };
    stdin.on("data", onData);
    stdin.resume();
  });
}
