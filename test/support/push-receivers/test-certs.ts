/**
 * A self-signed TLS certificate for the loopback push receivers, made once per
 * process with the `openssl` command line (Node cannot issue certificates).
 * Its subject alternative names cover 127.0.0.1, ::1, localhost and
 * *.example.test (push.example.test: a name tests resolve to 127.0.0.1
 * themselves). A sender trusts it through its `ca` option.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** TestCertificate is a PEM certificate and its private key; `cert` is also the CA to trust. */
export interface TestCertificate {
  readonly cert: string;
  readonly key: string;
}

/** TEST_CERT_NAMES are the host names the certificate is valid for (besides 127.0.0.1 and ::1). */
export const TEST_CERT_NAMES = ["localhost", "push.example.test", "*.example.test"] as const;

let made: TestCertificate | undefined;

/** testCertificate returns the process's test certificate (P-256, valid two days), making it on first use; throws if openssl fails. */
export function testCertificate(): TestCertificate {
  if (made !== undefined) return made;
  const dir = mkdtempSync(join(tmpdir(), "chat-push-cert-"));
  try {
    const san = ["IP:127.0.0.1", "IP:::1", ...TEST_CERT_NAMES.map((n) => `DNS:${n}`)].join(",");
    execFileSync(
      "openssl",
      [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "2",
        "-subj", "/CN=chat push test receiver", "-addext", `subjectAltName=${san}`,
      ],
      { stdio: ["ignore", "ignore", "pipe"], timeout: 20_000 },
    );
    made = { cert: readFileSync(join(dir, "cert.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
    return made;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
