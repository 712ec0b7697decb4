/**
 * DeviceTables: users' push devices (schema version 3): `devices_by_user`
 * (partition user_id, clustered by device_id) and `device_by_token`
 * ((kind, push_token) -> user_id, device_id), which says whose a token is,
 * so a registration by another user removes the earlier one. (`token` is a
 * CQL keyword: the column is `push_token`.)
 *
 * Rules every method keeps (besides CassandraSession's):
 * - No LWT. A registration writes its device row and the token's entry (and
 *   removes the token's earlier registration) in one logged batch, so they
 *   are applied together or, after a failure, not at all until retried.
 * - A delete removes only what was read: it carries `USING TIMESTAMP` = the
 *   write time of the row or entry it read, so a registration written since
 *   (a later timestamp) survives it. A device row is always written whole
 *   (every cell with one timestamp), so such a delete leaves no partial row.
 * - Races that only an LWT would close are left open, and stated: concurrent
 *   registrations of one user may exceed the cap by their number (the port
 *   allows it); concurrent registrations of one token by two users may both
 *   keep it until it is registered again or removed.
 */
import type { types } from "cassandra-driver";
import { tooManyDevices } from "../../core/errors.js";
import type { Device, PushKind } from "../../core/model.js";
import { num, optNum, optStr } from "./cassandra-session.js";
import type { CassandraSession, Statement } from "./cassandra-session.js";

/** Most devices one user's listing reads (far above any cap). */
const MAX_LISTED = 10_000;

/** TokenOwner is what `device_by_token` says of a token, with the entry's write time. */
interface TokenOwner {
  readonly userId: string;
  readonly deviceId: string;
  readonly writtenAt: number;
}

/**
 * DeviceTables reads and writes push devices (see the module comment).
 * Methods throw ChatError FailedPrecondition (tooManyDevices) past the cap
 * and ChatError Unavailable for driver failures.
 */
export class DeviceTables {
  private readonly q: ReturnType<typeof statements>;

  /** constructor takes the shared session. */
  constructor(private readonly db: CassandraSession) {
    this.q = statements(db.keyspace);
  }

  /**
   * registerDevice stores `device` (see DeviceStore.registerDevice): the
   * user's registration of the same (kind, token) is rewritten in place with
   * its id and createdAt; otherwise, with fewer than `maxDevices` devices of
   * the user, a new row, removing another user's registration of the token
   * (if that row still has the token). Throws tooManyDevices, writing
   * nothing, at the cap.
   */
  async registerDevice(device: Device, maxDevices: number): Promise<Device> {
    const [own, owner] = await Promise.all([this.listDevices(device.userId), this.tokenOwner(device.kind, device.token)]);
    const same = own.find((d) => d.kind === device.kind && d.token === device.token);
    if (!same && (Number.isNaN(maxDevices) || own.length >= maxDevices)) throw tooManyDevices(maxDevices);
    const stored: Device = same ? { ...device, id: same.id, createdAt: same.createdAt } : { ...device };
    const writes: Statement[] = [];
    if (owner && (owner.userId !== stored.userId || owner.deviceId !== stored.id)) {
      const previous = await this.deviceRow(owner.userId, owner.deviceId);
      if (previous && previous.device.kind === device.kind && previous.device.token === device.token) {
        writes.push([this.q.deleteDevice, [previous.writtenAt, owner.userId, owner.deviceId]]);
      }
    }
    writes.push([this.q.insertDevice, deviceParams(stored)]);
    writes.push([this.q.insertToken, [stored.kind, stored.token, stored.userId, stored.id]]);
    await this.db.batch(writes, true);
    return stored;
  }

  /** unregisterDevice removes the user's device and its token entry (if it is still the device's); false if the user has no such device. */
  async unregisterDevice(userId: string, deviceId: string): Promise<boolean> {
    const row = await this.deviceRow(userId, deviceId);
    if (!row) return false;
    await this.remove(row.device, row.writtenAt);
    return true;
  }

  /** listDevices returns the user's devices, oldest first, then by id. */
  async listDevices(userId: string): Promise<Device[]> {
    const rows = await this.db.fetch(this.q.devicesOfUser, [userId], MAX_LISTED);
    const out: Device[] = [];
    for (const r of rows) {
      const d = toDevice(userId, r);
      if (d) out.push(d);
    }
    return out.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** removeDeviceToken removes the user's device if it still has `token`; no-op otherwise. */
  async removeDeviceToken(userId: string, deviceId: string, token: string): Promise<void> {
    const row = await this.deviceRow(userId, deviceId);
    if (row && row.device.token === token) await this.remove(row.device, row.writtenAt);
  }

  // ---------------------------------------------------------------- private

  /** remove deletes a device row as read (written at `writtenAt`) and its token entry if that still names it. */
  private async remove(d: Device, writtenAt: number): Promise<void> {
    const owner = await this.tokenOwner(d.kind, d.token);
    const writes: Statement[] = [[this.q.deleteDevice, [writtenAt, d.userId, d.id]]];
    if (owner && owner.userId === d.userId && owner.deviceId === d.id) {
      writes.push([this.q.deleteToken, [owner.writtenAt, d.kind, d.token]]);
    }
    await this.db.batch(writes, true);
  }

  private async tokenOwner(kind: PushKind, token: string): Promise<TokenOwner | undefined> {
    const r = (await this.db.run(this.q.tokenOwner, [kind, token], true)).rows[0];
    const userId = optStr(r, "user_id");
    const deviceId = optStr(r, "device_id");
    const writtenAt = optNum(r, "written_at");
    if (userId === null || deviceId === null || writtenAt === null) return undefined;
    return { userId, deviceId, writtenAt };
  }

  private async deviceRow(userId: string, deviceId: string): Promise<{ device: Device; writtenAt: number } | undefined> {
    const r = (await this.db.run(this.q.device, [userId, deviceId], true)).rows[0];
    const device = r && toDevice(userId, r);
    return device && { device, writtenAt: num(r, "written_at") };
  }
}

function isPushKind(v: unknown): v is PushKind {
  return v === "web_push" || v === "fcm" || v === "apns";
}

function deviceParams(d: Device): unknown[] {
  return [d.userId, d.id, d.kind, d.token, d.p256dh, d.auth, d.topic, d.createdAt];
}

/** toDevice maps a devices_by_user row; undefined for a partial one (no kind, token or creation time). */
function toDevice(userId: string, r: types.Row): Device | undefined {
  const id = optStr(r, "device_id");
  const kind = optStr(r, "kind");
  const token = optStr(r, "push_token");
  const createdAt = optNum(r, "created_at");
  if (id === null || !isPushKind(kind) || token === null || createdAt === null) return undefined;
  return {
    id,
    userId,
    kind,
    token,
    p256dh: optStr(r, "p256dh") ?? "",
    auth: optStr(r, "auth") ?? "",
    topic: optStr(r, "topic") ?? "",
    createdAt,
  };
}

/** statements builds the family's CQL strings once per keyspace; the driver prepares each on first use. */
function statements(ks: string) {
  const cols = "device_id, kind, push_token, p256dh, auth, topic, created_at";
  return {
    insertDevice: `INSERT INTO ${ks}.devices_by_user (user_id, ${cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
    deleteDevice: `DELETE FROM ${ks}.devices_by_user USING TIMESTAMP ? WHERE user_id = ? AND device_id = ?`,
    device: `SELECT ${cols}, WRITETIME(push_token) AS written_at FROM ${ks}.devices_by_user WHERE user_id = ? AND device_id = ?`,
    devicesOfUser: `SELECT ${cols} FROM ${ks}.devices_by_user WHERE user_id = ?`,
    insertToken: `INSERT INTO ${ks}.device_by_token (kind, push_token, user_id, device_id) VALUES (?, ?, ?, ?)`,
    deleteToken: `DELETE FROM ${ks}.device_by_token USING TIMESTAMP ? WHERE kind = ? AND push_token = ?`,
    tokenOwner: `SELECT user_id, device_id, WRITETIME(device_id) AS written_at FROM ${ks}.device_by_token WHERE kind = ? AND push_token = ?`,
  };
}
