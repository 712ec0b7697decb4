import { readFile } from "node:fs/promises";
import tls from "node:tls";
import type { TlsConfig } from "./config.js";
import type { TlsOptions } from "./one-port-server.js";

/**
 * readTlsFiles reads the port's certificate chain and key (config.tls) and
 * checks that they make a TLS context: PEM, and the key belongs to the
 * certificate. Otherwise it throws an Error naming the setting and the
 * path, never the key's content, so that the server refuses to start.
 */
export async function readTlsFiles(config: TlsConfig): Promise<TlsOptions> {
  const [cert, key] = await Promise.all([readPem(config.certFile, "TLS_CERT_FILE"), readPem(config.keyFile, "TLS_KEY_FILE")]);
  if (!cert.includes("-----BEGIN CERTIFICATE-----")) throw new Error(`TLS_CERT_FILE: ${config.certFile} holds no PEM certificate`);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) throw new Error(`TLS_KEY_FILE: ${config.keyFile} holds no PEM private key`);
  try {
    tls.createSecureContext({ cert, key });
  } catch (e) {
    // OpenSSL's reason ("key values mismatch", "bad base64 decode"), which quotes neither file.
    const reason = e instanceof Error ? e.message : String(e);
    throw new Error(`TLS_CERT_FILE, TLS_KEY_FILE: ${config.certFile} and ${config.keyFile} are not a usable certificate and key: ${reason}`);
  }
  return { cert, key };
}

async function readPem(path: string, setting: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (e) {
    throw new Error(`${setting}: cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
}
