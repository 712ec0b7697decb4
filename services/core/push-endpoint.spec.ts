import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MAX_PUSH_ENDPOINT_LENGTH, checkPushEndpoint, isPublicAddress } from "./push-endpoint.js";

describe("isPublicAddress", () => {
  const table: ReadonlyArray<readonly [string, boolean]> = [
    // IPv4 public
    ["8.8.8.8", true],
    ["1.1.1.1", true],
    ["93.184.216.34", true],
    ["100.63.255.255", true],
    ["100.128.0.0", true],
    ["172.15.255.255", true],
    ["172.32.0.0", true],
    ["192.169.0.1", true],
    ["223.255.255.255", true],
    // IPv4 not public
    ["0.0.0.0", false],
    ["0.1.2.3", false],
    ["10.0.0.1", false],
    ["10.255.255.255", false],
    ["100.64.0.1", false],
    ["100.127.255.255", false],
    ["127.0.0.1", false],
    ["127.255.255.254", false],
    ["169.254.169.254", false],
    ["172.16.0.1", false],
    ["172.31.255.255", false],
    ["192.0.0.8", false],
    ["192.0.2.1", false],
    ["192.88.99.1", false],
    ["192.168.1.1", false],
    ["198.18.0.1", false],
    ["198.19.255.255", false],
    ["198.51.100.7", false],
    ["203.0.113.9", false],
    ["224.0.0.1", false],
    ["239.255.255.250", false],
    ["240.0.0.1", false],
    ["255.255.255.255", false],
    // IPv6 public
    ["2606:4700:4700::1111", true],
    ["2a00:1450:4001:80b::200e", true],
    ["[2606:4700:4700::1111]", true],
    ["2002:0808:0808::1", true],
    ["::ffff:8.8.8.8", true],
    ["64:ff9b::808:808", true],
    // IPv6 not public
    ["::", false],
    ["::1", false],
    ["[::1]", false],
    ["0:0:0:0:0:0:0:1", false],
    ["::ffff:127.0.0.1", false],
    ["::ffff:7f00:1", false],
    ["::ffff:10.0.0.1", false],
    ["::ffff:169.254.169.254", false],
    ["::127.0.0.1", false],
    ["64:ff9b::7f00:1", false],
    ["64:ff9b:1::1", false],
    ["2002:7f00:0001::1", false],
    ["2002:c0a8:0101::1", false],
    ["100::1", false],
    ["2001::1", false],
    ["2001:0:4136:e378:8000:63bf:3fff:fdd2", false],
    ["2001:db8::1", false],
    ["3fff::1", false],
    ["5f00::1", false],
    ["fc00::1", false],
    ["fd12:3456:789a::1", false],
    ["fe80::1", false],
    ["fe80::1%eth0", false],
    ["febf::1", false],
    ["fec0::1", false],
    ["ff02::1", false],
    ["4000::1", false],
    // not addresses
    ["", false],
    ["localhost", false],
    ["example.com", false],
    ["1.2.3", false],
    ["256.1.1.1", false],
    ["::g", false],
  ];
  for (const [ip, expected] of table) {
    it(`${JSON.stringify(ip)} is ${expected ? "public" : "not public"}`, () => {
      assert.equal(isPublicAddress(ip), expected);
    });
  }
});

describe("checkPushEndpoint", () => {
  const strict = { allowPrivate: false };
  const lax = { allowPrivate: true };
  const accepted: ReadonlyArray<readonly [string, { allowPrivate: boolean }]> = [
    ["https://fcm.googleapis.com/fcm/send/abc:APA91b", strict],
    ["https://updates.push.services.mozilla.com/wpush/v2/gAAAA", strict],
    ["https://web.push.apple.com/QGuQyavXutnMH", strict],
    ["https://push.example.com:8443/p/1?x=y", strict],
    ["https://8.8.8.8/push", strict],
    ["https://[2606:4700:4700::1111]/push", strict],
    ["https://push.example.com./p", strict],
    ["http://127.0.0.1:9000/push/1", lax],
    ["https://localhost:9000/push/1", lax],
    ["http://[::1]:9000/push", lax],
    ["http://10.1.2.3/push", lax],
  ];
  for (const [url, policy] of accepted) {
    it(`accepts ${url} (allowPrivate ${policy.allowPrivate})`, () => {
      assert.equal(checkPushEndpoint(url, policy), undefined);
    });
  }

  const refused: ReadonlyArray<readonly [string, { allowPrivate: boolean }, RegExp]> = [
    ["", strict, /required/],
    ["not a url", strict, /spaces/],
    ["push.example.com/p", strict, /absolute URL/],
    ["http://push.example.com/p", strict, /https:\/\//],
    ["ftp://push.example.com/p", lax, /https:\/\/ or http:\/\//],
    ["javascript:alert(1)", strict, /https/],
    ["https://user:pw@push.example.com/p", strict, /user name or password/],
    ["https://user@push.example.com/p", lax, /user name or password/],
    ["https://127.0.0.1/p", strict, /not a public address/],
    ["https://0x7f.1/p", strict, /not a public address/],
    ["https://2130706433/p", strict, /not a public address/],
    ["https://0177.0.0.1/p", strict, /not a public address/],
    ["https://0.0.0.0/p", strict, /not a public address/],
    ["https://169.254.169.254/latest/meta-data", strict, /not a public address/],
    ["https://192.168.0.10/p", strict, /not a public address/],
    ["https://[::1]/p", strict, /not a public address/],
    ["https://[::ffff:127.0.0.1]/p", strict, /not a public address/],
    ["https://[fe80::1]/p", strict, /not a public address/],
    ["https://[fd00::1]/p", strict, /not a public address/],
    ["https://[ff02::1]/p", strict, /not a public address/],
    ["https://localhost/p", strict, /local name/],
    ["https://LOCALHOST./p", strict, /local name/],
    ["https://push.localhost/p", strict, /local name/],
    ["https://printer.local/p", strict, /local name/],
    ["https://router.home.arpa/p", strict, /local name/],
    ["https://metadata.internal/p", strict, /local name/],
    ["https://intranet/p", strict, /fully qualified/],
    [`https://push.example.com/${"a".repeat(MAX_PUSH_ENDPOINT_LENGTH)}`, lax, /limit is 2048/],
    ["https://push.example.com/a\nb", lax, /control characters/],
  ];
  for (const [url, policy, message] of refused) {
    it(`refuses ${JSON.stringify(url.slice(0, 60))} (allowPrivate ${policy.allowPrivate})`, () => {
      const got = checkPushEndpoint(url, policy);
      assert.ok(got !== undefined, "expected a refusal");
      assert.match(got, message);
    });
  }

  it("accepts exactly the maximum length", () => {
    const base = "https://push.example.com/";
    const url = base + "a".repeat(MAX_PUSH_ENDPOINT_LENGTH - base.length);
    assert.equal(url.length, MAX_PUSH_ENDPOINT_LENGTH);
    assert.equal(checkPushEndpoint(url, strict), undefined);
    assert.match(checkPushEndpoint(`${url}a`, strict) ?? "", /limit/);
  });
});
