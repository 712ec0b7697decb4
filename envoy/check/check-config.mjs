// Checks envoy.yaml (already converted to JSON) against Envoy's v3 API protos, without Envoy.
//
//   node envoy/check/check-config.mjs <descriptor-set.binpb> <envoy.json>
//
// 1. Parses the JSON as envoy.config.bootstrap.v3.Bootstrap with @bufbuild/protobuf's strict JSON
//    parser: every field name, enum value, duration and nested "@type" (google.protobuf.Any) must
//    exist in the protos, as Envoy's own loader requires.
// 2. Walks the parsed message and checks the protoc-gen-validate rules Envoy enforces that a JSON
//    parse does not: required messages and oneofs, string min_len, repeated min_items, numeric and
//    duration bounds, defined enums.
// 3. Warns about fields and enum values marked deprecated in the protos.
//
// It is a subset of what `envoy --mode validate` does (no extension-specific checks, no
// cross-references between clusters and routes, no regex compilation). See envoy/README.md.
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary, fromJson, getOption, hasOption } from "@bufbuild/protobuf";
import { anyUnpack, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { reflect } from "@bufbuild/protobuf/reflect";

const [descriptorPath, configPath] = process.argv.slice(2);
if (!descriptorPath || !configPath) {
  console.error("usage: check-config.mjs <descriptor-set.binpb> <envoy.json>");
  process.exit(2);
}
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorPath)));
const bootstrapDesc = registry.getMessage("envoy.config.bootstrap.v3.Bootstrap");
const rulesExt = registry.getExtension("validate.rules");
const oneofRequiredExt = registry.getExtension("validate.required");
const deprecatedAtExt = registry.getExtension("envoy.annotations.deprecated_at_minor_version");
const enumDeprecatedAtExt = registry.getExtension("envoy.annotations.deprecated_at_minor_version_enum");
if (!bootstrapDesc || !rulesExt || !oneofRequiredExt) throw new Error("descriptor set lacks Bootstrap or validate.proto");

let bootstrap;
try {
  bootstrap = fromJson(bootstrapDesc, JSON.parse(readFileSync(configPath, "utf8")), { registry });
} catch (e) {
  console.error(`FAIL: not a valid envoy.config.bootstrap.v3.Bootstrap: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
}

const errors = [];
const warnings = [];
const typesSeen = new Set();

/** seconds reads a google.protobuf.Duration as a number of seconds. */
function seconds(d) {
  return Number(d.seconds) + d.nanos / 1e9;
}

/** ruleValue returns a proto2 rule field (validate.proto) if it is explicitly set, else undefined. */
function ruleValue(rule, name) {
  const r = reflect(registry.getMessage(rule.$typeName), rule);
  const f = r.desc.fields.find((x) => x.localName === name);
  return f && r.isSet(f) ? r.get(f) : undefined;
}

const WRAPPERS = /^google\.protobuf\.(U?Int(32|64)|Double|Float|Bool|String|Bytes)Value$/;

function checkField(path, field, r) {
  const set = r.isSet(field);
  if (set && field.deprecated) warnings.push(`${path}: field is deprecated in the protos`);
  if (set && deprecatedAtExt && hasOption(field, deprecatedAtExt)) {
    warnings.push(`${path}: deprecated since ${getOption(field, deprecatedAtExt)}`);
  }
  if (!hasOption(field, rulesExt)) return;
  // Rules on a member of a oneof apply only to the member that is set.
  if (field.oneof && !set) return;
  const rules = getOption(field, rulesExt);
  if (rules.message && ruleValue(rules.message, "required") && !set) {
    errors.push(`${path}: required`);
    return;
  }
  const { case: kind, value: rule } = rules.type;
  if (kind === undefined) return;
  let v = set ? r.get(field) : undefined;
  const isWrapper = field.fieldKind === "message" && WRAPPERS.test(field.message.typeName);
  if (isWrapper) {
    if (!set) return; // rules on a wrapper apply only when it is present
    v = v.message.value;
  }
  const get = (name) => ruleValue(rule, name);
  switch (kind) {
    case "string": {
      const text = set ? String(v) : "";
      if (text === "" && get("ignoreEmpty")) break;
      const minLen = get("minLen");
      if (minLen !== undefined && text.length < Number(minLen)) errors.push(`${path}: must be at least ${minLen} characters`);
      break;
    }
    case "repeated": {
      const size = v?.size ?? 0;
      const [minItems, maxItems] = [get("minItems"), get("maxItems")];
      if (minItems !== undefined && size < Number(minItems)) errors.push(`${path}: needs at least ${minItems} items`);
      if (maxItems !== undefined && size > Number(maxItems)) errors.push(`${path}: at most ${maxItems} items`);
      break;
    }
    case "duration": {
      if (get("required") && !set) errors.push(`${path}: required`);
      if (set) {
        const s = seconds(v.message);
        const [gt, gte, lt, lte] = ["gt", "gte", "lt", "lte"].map((n) => get(n)?.message ?? get(n));
        if (gt && !(s > seconds(gt))) errors.push(`${path}: must be > ${seconds(gt)}s (is ${s}s)`);
        if (gte && !(s >= seconds(gte))) errors.push(`${path}: must be >= ${seconds(gte)}s (is ${s}s)`);
        if (lt && !(s < seconds(lt))) errors.push(`${path}: must be < ${seconds(lt)}s (is ${s}s)`);
        if (lte && !(s <= seconds(lte))) errors.push(`${path}: must be <= ${seconds(lte)}s (is ${s}s)`);
      }
      break;
    }
    case "enum":
      if (set && get("definedOnly") && !field.enum.values.some((e) => e.number === v)) {
        errors.push(`${path}: undefined enum value ${v}`);
      }
      break;
    case "uint32":
    case "uint64":
    case "int32":
    case "int64":
    case "double": {
      // Rules on plain proto3 scalars apply to the value, also when it is the default 0.
      const n = Number(set ? v : 0);
      const b = (name) => (get(name) === undefined ? undefined : Number(get(name)));
      const [gt, gte, lt, lte] = [b("gt"), b("gte"), b("lt"), b("lte")];
      if (gt !== undefined && !(n > gt)) errors.push(`${path}: must be > ${gt} (is ${n})`);
      if (gte !== undefined && !(n >= gte)) errors.push(`${path}: must be >= ${gte} (is ${n})`);
      if (lt !== undefined && !(n < lt)) errors.push(`${path}: must be < ${lt} (is ${n})`);
      if (lte !== undefined && !(n <= lte)) errors.push(`${path}: must be <= ${lte} (is ${n})`);
      break;
    }
    default:
      break;
  }
}

function walk(path, r) {
  const desc = r.desc;
  if (desc.typeName === "google.protobuf.Any") {
    const inner = anyUnpack(r.message, registry);
    if (!inner) {
      errors.push(`${path}: unknown @type ${r.message.typeUrl}`);
      return;
    }
    const innerDesc = registry.getMessage(r.message.typeUrl.replace(/^.*\//, ""));
    typesSeen.add(innerDesc.typeName);
    walk(`${path}<${innerDesc.name}>`, reflect(innerDesc, inner));
    return;
  }
  for (const oneof of desc.oneofs) {
    if (hasOption(oneof, oneofRequiredExt) && getOption(oneof, oneofRequiredExt)) {
      if (!oneof.fields.some((f) => r.isSet(f))) errors.push(`${path}: one of ${oneof.fields.map((f) => f.name).join(", ")} is required`);
    }
  }
  for (const field of desc.fields) {
    const p = `${path}.${field.name}`;
    checkField(p, field, r);
    if (!r.isSet(field)) continue;
    const v = r.get(field);
    if (field.fieldKind === "message") walk(p, v);
    else if (field.fieldKind === "list" && field.listKind === "message") {
      let i = 0;
      for (const item of v) walk(`${p}[${i++}]`, item);
    } else if (field.fieldKind === "map" && field.mapKind === "message") {
      for (const [k, item] of v) walk(`${p}[${k}]`, item);
    } else if (field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum")) {
      const values = field.fieldKind === "enum" ? [v] : [...v];
      for (const n of values) {
        const ev = field.enum.values.find((e) => e.number === n);
        if (ev?.deprecated) warnings.push(`${p}: enum value ${ev.name} is deprecated`);
        if (ev && enumDeprecatedAtExt && hasOption(ev, enumDeprecatedAtExt)) {
          warnings.push(`${p}: enum value ${ev.name} deprecated since ${getOption(ev, enumDeprecatedAtExt)}`);
        }
      }
    }
  }
}

walk("bootstrap", reflect(bootstrapDesc, bootstrap));
for (const w of warnings) console.log(`WARN: ${w}`);
for (const e of errors) console.log(`ERROR: ${e}`);
console.log(`typed configs checked: ${[...typesSeen].sort().join(", ")}`);
if (errors.length > 0) {
  console.log(`FAIL: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`OK: envoy config parses as Bootstrap and passes the checked validate rules (${warnings.length} warning(s))`);
