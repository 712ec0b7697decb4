import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type Figure, compareFigures, comparisonTable, ratioOf, ratioText } from "./lib/compare.js";
import { type LeanStream, connectSession, leanSubscribe, leanWsSubscribe } from "./lib/lean-reader.js";
import { parseOptions } from "./lib/options.js";
import { SEND_PATH, UnaryPool } from "./lib/unary.js";
import { type LeanItem, benchText, decodeSendMessageResponse, encodeSendMessageRequest } from "./lib/wire-lite.js";

const fig = (label: string, value: Figure["value"], better: Figure["better"] = "lower", unit = "ms", decimals = 2): Figure => ({ label, unit, value, decimals, better });

describe("--compare: figures side by side", () => {
  it("divides the target's figure by the compared one's, and has no ratio for text, missing values or a zero divisor", () => {
    assert.equal(ratioOf(30, 120), 0.25);
    assert.equal(ratioOf(0, 0), undefined);
    assert.equal(ratioOf(5, 0), undefined);
    assert.equal(ratioOf(undefined, 3), undefined);
    assert.equal(ratioOf("no", 3), undefined);
  });

  it("prints ratios with two decimals, whole numbers from 10 and two significant digits below 0.1", () => {
    assert.deepEqual([0.25, 1, 1.005, 9.994, 12.4, 1234.5, 0.0456, 0, undefined].map(ratioText), ["0.25", "1.00", "1.01", "9.99", "12", "1,235", "0.046", "0", "-"]);
  });

  it("pairs figures by label in the first run's order and prints one row each", () => {
    const ours = [fig("deliveries/s", 33_800, "higher", "", 0), fig("delivery p99", 17.2), fig("stopped by", "p99 > 200 ms", "-"), fig("ours only", 1)];
    const reference = [fig("delivery p99", 4.3), fig("deliveries/s", 139_000, "higher", "", 0), fig("stopped by", "load generator bound", "-"), fig("reference only", 2)];
    const rows = compareFigures(ours, reference);
    assert.deepEqual(
      rows.map((r) => [r.label, r.a, r.b, r.ratio === undefined ? undefined : Math.round(r.ratio * 1000) / 1000, r.better]),
      [
        ["deliveries/s", "33,800", "139,000", 0.243, "higher"],
        ["delivery p99", "17.20 ms", "4.30 ms", 4, "lower"],
        ["stopped by", "p99 > 200 ms", "load generator bound", undefined, "-"],
        ["ours only", "1.00 ms", "-", undefined, "lower"],
        ["reference only", "-", "2.00 ms", undefined, "lower"],
      ],
    );
    const lines = comparisonTable("embedded", "reference", rows).split("\n");
    assert.match(lines[0] ?? "", /^ {2}figure +embedded +reference +embedded ÷ reference +better$/);
    assert.match(lines[2] ?? "", /^ {2}deliveries\/s +33,800 +139,000 +0\.24 +higher$/);
    assert.match(lines[3] ?? "", /^ {2}delivery p99 +17\.20 ms +4\.30 ms +4\.00 +lower$/);
    assert.equal(lines.length, 2 + rows.length);
  });

  it("accepts --target reference and --compare with fixed and max only", () => {
    assert.equal(parseOptions(["max", "--target", "reference"]).target, "reference");
    assert.equal(parseOptions(["fixed", "--compare", "reference"]).compare, "reference");
    assert.equal(parseOptions(["fixed"]).compare, "");
    assert.throws(() => parseOptions(["send", "--target", "reference"]), /fixed and max modes only/);
    assert.throws(() => parseOptions(["history", "--compare", "reference"]), /fixed and max modes only/);
    assert.throws(() => parseOptions(["fixed", "--target", "reference", "--compare", "reference"]), /is the --target itself/);
    assert.throws(() => parseOptions(["fixed", "--compare", "url"]), /--compare must be one of/);
  });
});

describe("the reference broadcast server", () => {
  let child: ChildProcess;
  let url = "";
  before(async () => {
    child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "reference/broadcast-server.ts")], { stdio: ["ignore", "pipe", "inherit"] });
    url = await new Promise<string>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`the reference server exited with ${code}`)));
      child.stdout?.once("data", (d: Buffer) => resolve(`http://127.0.0.1:${(JSON.parse(d.toString()) as { port: number }).port}`));
    });
  });
  after(() => {
    child.kill("SIGTERM");
  });

  it("speaks the bench's wire: SendMessage over h2c, the event to every subscriber of the group over WebSocket and gRPC, with seqs", async () => {
    type Seen = { kind: string; groupId: string; seq: number; text: string | undefined; positions: string[] };
    const subscribe = (open: (o: Parameters<typeof leanWsSubscribe>[0]) => LeanStream, token: string) => {
      const seen: Seen[] = [];
      let ready!: () => void;
      const isReady = new Promise<void>((r) => (ready = r));
      const stream = open({
        url,
        token,
        onItem: (i: LeanItem) => {
          seen.push({ kind: i.kind, groupId: i.groupId, seq: i.seq, text: i.text(), positions: i.kind === "ready" ? i.positions.map((p) => `${p.groupId}@${p.seq}`) : [] });
          if (i.kind === "ready") ready();
        },
        onEnd: () => {},
      });
      return { seen, isReady, stream };
    };
    const session = await connectSession(url);
    const ws = subscribe(leanWsSubscribe, "a,b"); // the "token" is the groups to join
    const grpc = subscribe((o) => leanSubscribe({ ...o, session }), "a");
    const outsider = subscribe(leanWsSubscribe, "c");
    await Promise.all([ws.isReady, grpc.isReady, outsider.isReady]);
    const pool = new UnaryPool(url, 1);
    try {
      const texts = [benchText(1_700_000_000_000_000, 3, 40), benchText(1_700_000_000_000_001, 3, 40)];
      const seqs = [];
      for (const [i, text] of texts.entries()) {
        const r = await pool.callAsync(SEND_PATH, "ignored", encodeSendMessageRequest(i === 0 ? "a" : "b", text, `c${i}`), 5000);
        assert.equal(r.code, 0, r.message);
        seqs.push(decodeSendMessageResponse(r.payload as Buffer).seq);
      }
      const again = await pool.callAsync(SEND_PATH, "ignored", encodeSendMessageRequest("a", "x", "c2"), 5000);
      assert.equal(decodeSendMessageResponse(again.payload as Buffer).seq, 2, "a group's seqs count up from 1");
      assert.deepEqual(seqs, [1, 1]);
      for (let i = 0; i < 200 && (ws.seen.length < 4 || grpc.seen.length < 3); i++) await new Promise((r) => setTimeout(r, 10));
      assert.deepEqual(ws.seen, [
        { kind: "ready", groupId: "", seq: 0, text: undefined, positions: ["a@0", "b@0"] },
        { kind: "event", groupId: "a", seq: 1, text: texts[0], positions: [] },
        { kind: "event", groupId: "b", seq: 1, text: texts[1], positions: [] },
        { kind: "event", groupId: "a", seq: 2, text: "x", positions: [] },
      ]);
      assert.deepEqual(grpc.seen.map((s) => `${s.kind} ${s.groupId}@${s.seq}`), ["ready @0", "event a@1", "event a@2"]);
      assert.deepEqual(outsider.seen.map((s) => s.kind), ["ready"], "a connection gets only its groups' events");
    } finally {
      pool.close();
      for (const s of [ws, grpc, outsider]) s.stream.close();
      session.close();
    }
  });
});
