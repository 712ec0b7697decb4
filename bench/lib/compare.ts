/**
 * Two targets side by side (`--compare`, issue 16.1): the figures a mode
 * records for each run, and the table of both with their ratio (the target ÷
 * the compared one, e.g. ours ÷ the reference).
 */
import { fmt, gridTable } from "./report.js";

/** Figure is one number (or text) a mode reports, named the same on every target. */
export interface Figure {
  readonly label: string;
  /** The unit printed after the values ("" for a count). */
  readonly unit: string;
  readonly value: number | string | undefined;
  /** Decimals printed (numbers only). */
  readonly decimals: number;
  /** Which way is better, for the reader of the ratio ("-" when neither: context such as the offered load). */
  readonly better: "higher" | "lower" | "-";
}

/** ComparedRow is one figure of both runs and their ratio (undefined when it has none: text, missing, or a zero divisor). */
export interface ComparedRow {
  readonly label: string;
  readonly unit: string;
  /** The raw values (for the JSON). */
  readonly values: readonly [Figure["value"], Figure["value"]];
  readonly a: string;
  readonly b: string;
  readonly ratio: number | undefined;
  readonly better: Figure["better"];
}

/** ratioOf is a ÷ b for two numbers; undefined for text, a missing value, or b = 0 (0 ÷ 0 included). */
export function ratioOf(a: Figure["value"], b: Figure["value"]): number | undefined {
  if (typeof a !== "number" || typeof b !== "number" || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return undefined;
  return a / b;
}

function valueText(f: Figure | undefined): string {
  if (!f || f.value === undefined) return "-";
  if (typeof f.value === "string") return f.value;
  return `${fmt(f.value, f.decimals)}${f.unit ? ` ${f.unit}` : ""}`;
}

/** compareFigures pairs the figures of two runs by label, in the first run's order (then any only the second has). */
export function compareFigures(a: readonly Figure[], b: readonly Figure[]): ComparedRow[] {
  const labels = [...a.map((f) => f.label), ...b.map((f) => f.label).filter((l) => !a.some((f) => f.label === l))];
  return labels.map((label) => {
    const fa = a.find((f) => f.label === label);
    const fb = b.find((f) => f.label === label);
    return {
      label,
      unit: (fa ?? fb)?.unit ?? "",
      values: [fa?.value, fb?.value],
      a: valueText(fa),
      b: valueText(fb),
      ratio: ratioOf(fa?.value, fb?.value),
      better: (fa ?? fb)?.better ?? "-",
    };
  });
}

/** ratioText prints a ratio with 2 significant decimals below 10 (0.36, 1.05, 12.4 → "12"), "-" when there is none. */
export function ratioText(r: number | undefined): string {
  if (r === undefined) return "-";
  if (r >= 10) return fmt(r, 0);
  if (r >= 0.1) return fmt(r, 2);
  return r === 0 ? "0" : r.toPrecision(2);
}

/** comparisonTable prints both runs' figures with the ratio a ÷ b and which way is better. */
export function comparisonTable(aName: string, bName: string, rows: readonly ComparedRow[]): string {
  return gridTable(
    ["figure", aName, bName, `${aName} ÷ ${bName}`, "better"],
    rows.map((r) => [r.label, r.a, r.b, ratioText(r.ratio), r.better]),
  );
}
