/**
 * Test certificates made with openssl: a throwaway CA, and a server
 * certificate it signed for 127.0.0.1 and localhost, in a fresh temporary
 * directory. Nothing is trusted beyond the test that passes the CA.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** TestCertificates are PEM files in `dir`, the CA's certificate also as text (what a client trusts). */
export interface TestCertificates {
  readonly dir: string;
  readonly caFile: string;
  readonly ca: string;
  /** The server's certificate (signed by the CA; SAN IP:127.0.0.1, DNS:localhost) and its key. */
  readonly certFile: string;
  readonly keyFile: string;
  /** A second key that does not match certFile. */
  readonly otherKeyFile: string;
  /** remove deletes the directory. */
  remove(): Promise<void>;
}

/** makeTestCertificates writes a CA and a server certificate (P-256, valid for a day) with `openssl`. */
export async function makeTestCertificates(): Promise<TestCertificates> {
  const dir = await mkdtemp(join(tmpdir(), "chat-tls-"));
  const f = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await run("openssl", [
    "req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "1", "-subj", "/CN=chat test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await run("openssl", ["req", ...ec, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost"]);
  await writeFile(
    f("server.ext"),
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
  );
  await run("openssl", [
    "x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial",
    "-out", f("server.pem"), "-days", "1", "-extfile", f("server.ext"),
  ]);
  await run("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f("other.key")]);
  return {
    dir,
    caFile: f("ca.pem"),
    ca: await readFile(f("ca.pem"), "utf8"),
    certFile: f("server.pem"),
    keyFile: f("server.key"),
    otherKeyFile: f("other.key"),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}
