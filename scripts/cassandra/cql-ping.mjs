#!/usr/bin/env node
// Dependency-free CQL readiness probe (native protocol v4).
// Sends STARTUP, then QUERY "SELECT release_version FROM system.local" at
// consistency ONE, and prints the release_version. Exit 0 on success,
// 1 on any error or timeout. Used by cassandra.sh `wait` so that readiness
// means "a real CQL query returned rows", not just "the port is open".
//
// usage: node cql-ping.mjs [host] [port] [timeoutMs]
import net from 'node:net';

const host = process.argv[2] || '127.0.0.1';
const port = Number(process.argv[3] || 9042);
const timeoutMs = Number(process.argv[4] || 5000);

const VERSION = 0x04;
const OP = { ERROR: 0x00, STARTUP: 0x01, READY: 0x02, QUERY: 0x07, RESULT: 0x08 };

function frame(stream, opcode, body) {
  const h = Buffer.alloc(9);
  h.writeUInt8(VERSION, 0);
  h.writeUInt8(0, 1); // flags
  h.writeInt16BE(stream, 2);
  h.writeUInt8(opcode, 4);
  h.writeInt32BE(body.length, 5);
  return Buffer.concat([h, body]);
}

function shortString(s) {
  const b = Buffer.from(s, 'utf8');
  const l = Buffer.alloc(2);
  l.writeUInt16BE(b.length);
  return Buffer.concat([l, b]);
}

function longString(s) {
  const b = Buffer.from(s, 'utf8');
  const l = Buffer.alloc(4);
  l.writeInt32BE(b.length);
  return Buffer.concat([l, b]);
}

function startupBody() {
  const n = Buffer.alloc(2);
  n.writeUInt16BE(1);
  return Buffer.concat([n, shortString('CQL_VERSION'), shortString('3.0.0')]);
}

function queryBody(cql) {
  const tail = Buffer.alloc(3);
  tail.writeUInt16BE(0x0001, 0); // consistency ONE
  tail.writeUInt8(0, 2); // no query flags
  return Buffer.concat([longString(cql), tail]);
}

class Reader {
  constructor(buf) { this.buf = buf; this.off = 0; }
  int() { const v = this.buf.readInt32BE(this.off); this.off += 4; return v; }
  short() { const v = this.buf.readUInt16BE(this.off); this.off += 2; return v; }
  string() { const n = this.short(); const s = this.buf.toString('utf8', this.off, this.off + n); this.off += n; return s; }
  bytes() { const n = this.int(); if (n < 0) return null; const b = this.buf.subarray(this.off, this.off + n); this.off += n; return b; }
}

function fail(msg) {
  process.stderr.write(`cql-ping: ${msg}\n`);
  process.exit(1);
}

const timer = setTimeout(() => fail(`timeout after ${timeoutMs} ms`), timeoutMs);
const sock = net.connect({ host, port });
let pending = Buffer.alloc(0);
let stage = 'startup';

sock.on('error', (e) => fail(e.message));
sock.on('close', () => { if (stage !== 'done') fail('connection closed by server'); });
sock.on('connect', () => sock.write(frame(1, OP.STARTUP, startupBody())));
sock.on('data', (chunk) => {
  pending = Buffer.concat([pending, chunk]);
  while (pending.length >= 9) {
    const len = pending.readInt32BE(5);
    if (pending.length < 9 + len) return;
    const opcode = pending.readUInt8(4);
    const body = pending.subarray(9, 9 + len);
    pending = pending.subarray(9 + len);
    handle(opcode, body);
  }
});

function handle(opcode, body) {
  if (opcode === OP.ERROR) {
    const r = new Reader(body);
    const code = r.int();
    fail(`server error 0x${code.toString(16)}: ${r.string()}`);
  }
  if (stage === 'startup') {
    if (opcode !== OP.READY) fail(`expected READY, got opcode ${opcode}`);
    stage = 'query';
    sock.write(frame(2, OP.QUERY, queryBody('SELECT release_version FROM system.local')));
    return;
  }
  if (stage === 'query') {
    if (opcode !== OP.RESULT) fail(`expected RESULT, got opcode ${opcode}`);
    const r = new Reader(body);
    const kind = r.int();
    if (kind !== 2) fail(`expected Rows result, got kind ${kind}`);
    const flags = r.int();
    const cols = r.int();
    if (flags & 0x0002) r.bytes(); // paging state
    if (!(flags & 0x0004)) {
      const global = flags & 0x0001;
      if (global) { r.string(); r.string(); }
      for (let i = 0; i < cols; i++) {
        if (!global) { r.string(); r.string(); }
        r.string(); // column name
        const type = r.short();
        if (type !== 0x000d && type !== 0x0001 && type !== 0x000a) fail(`unexpected column type ${type}`);
      }
    }
    const rows = r.int();
    if (rows < 1) fail('system.local returned no rows');
    const v = r.bytes();
    stage = 'done';
    clearTimeout(timer);
    sock.destroy();
    process.stdout.write(`${v ? v.toString('utf8') : 'null'}\n`, () => process.exit(0));
  }
}
