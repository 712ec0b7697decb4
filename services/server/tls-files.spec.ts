import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type TestCertificates, makeTestCertificates } from "../../test/support/tls-fixture.js";
import { readTlsFiles } from "./tls-files.js";

describe("readTlsFiles", () => {
  let certs: TestCertificates;
  before(async () => {
    certs = await makeTestCertificates();
  });
  after(async () => {
    await certs.remove();
  });

  it("returns the certificate and key as PEM text", async () => {
    const got = await readTlsFiles({ certFile: certs.certFile, keyFile: certs.keyFile });
    assert.match(String(got.cert), /^-----BEGIN CERTIFICATE-----/);
    assert.match(String(got.key), /-----BEGIN PRIVATE KEY-----/);
  });

  it("refuses, naming the setting and the path, a missing file, a file that is no PEM, and a key of another certificate", async () => {
    const missing = join(certs.dir, "missing.pem");
    const notPem = join(certs.dir, "not.pem");
    await writeFile(notPem, "hello\n");
    const cases: [{ certFile: string; keyFile: string }, RegExp][] = [
      [{ certFile: missing, keyFile: certs.keyFile }, /^TLS_CERT_FILE: cannot read .*missing\.pem: ENOENT/],
      [{ certFile: certs.certFile, keyFile: missing }, /^TLS_KEY_FILE: cannot read .*missing\.pem: ENOENT/],
      [{ certFile: certs.dir, keyFile: certs.keyFile }, /^TLS_CERT_FILE: cannot read .*: EISDIR/],
      [{ certFile: notPem, keyFile: certs.keyFile }, /^TLS_CERT_FILE: .*not\.pem holds no PEM certificate$/],
      [{ certFile: certs.certFile, keyFile: notPem }, /^TLS_KEY_FILE: .*not\.pem holds no PEM private key$/],
      // The certificate where the key belongs, and a key that is not the certificate's.
      [{ certFile: certs.keyFile, keyFile: certs.keyFile }, /^TLS_CERT_FILE: .* holds no PEM certificate$/],
      [{ certFile: certs.certFile, keyFile: certs.otherKeyFile }, /^TLS_CERT_FILE, TLS_KEY_FILE: .* are not a usable certificate and key: .*key values mismatch/],
    ];
    for (const [files, want] of cases) {
      await assert.rejects(readTlsFiles(files), (e: Error) => {
        assert.match(e.message, want, JSON.stringify(files));
        assert.ok(!e.message.includes("PRIVATE KEY"), "the key's content is never quoted");
        return true;
      });
    }
  });
});
