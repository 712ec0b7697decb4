/**
 * SqliteDevices: the DeviceStore part of the embedded store, on the
 * `devices` table (schema version 5): UNIQUE (kind, token), so a token is
 * stored once; listed from the (user_id, created_at, id) index.
 */
import type { Database as Db } from "better-sqlite3";
import { tooManyDevices } from "../../core/errors.js";
import type { Device, PushKind } from "../../core/model.js";
import type { DeviceStore } from "../../core/ports.js";

interface DeviceRow {
  id: string;
  user_id: string;
  kind: string;
  token: string;
  p256dh: string;
  auth: string;
  topic: string;
  created_at: number;
}

/**
 * SqliteDevices implements DeviceStore on one database. registerDevice reads
 * the token's current row, checks the cap and writes inside one IMMEDIATE
 * transaction, so the cap holds exactly (no concurrent registration passes
 * it) and a failed registration writes nothing.
 */
export class SqliteDevices implements DeviceStore {
  private readonly q: ReturnType<typeof statements>;
  private readonly registerTx: (device: Device, maxDevices: number) => Device;

  /** constructor prepares the statements. */
  constructor(db: Db) {
    const q = statements(db);
    this.q = q;
    const register = db.transaction((d: Device, maxDevices: number): Device => {
      const existing = q.byToken.get(d.kind, d.token);
      if (existing && existing.user_id === d.userId) {
        q.updateInPlace.run(d.p256dh, d.auth, d.topic, existing.id);
        return { ...d, id: existing.id, createdAt: existing.created_at };
      }
      const cap = Number.isNaN(maxDevices) ? 0 : Math.max(0, Math.min(Math.floor(maxDevices), Number.MAX_SAFE_INTEGER));
      if ((q.countOfUser.get(d.userId, cap) ?? 0) >= cap) throw tooManyDevices(maxDevices);
      if (existing) q.deleteById.run(existing.id);
      q.insert.run(d.id, d.userId, d.kind, d.token, d.p256dh, d.auth, d.topic, d.createdAt);
      return { ...d };
    });
    this.registerTx = (d, max) => register.immediate(d, max);
  }

  async registerDevice(device: Device, maxDevices: number): Promise<Device> {
    return this.registerTx(device, maxDevices);
  }

  async unregisterDevice(userId: string, deviceId: string): Promise<boolean> {
    return this.q.deleteOfUser.run(deviceId, userId).changes === 1;
  }

  async listDevices(userId: string): Promise<Device[]> {
    return this.q.ofUser.all(userId).map(toDevice);
  }

  async removeDeviceToken(userId: string, deviceId: string, token: string): Promise<void> {
    this.q.deleteWithToken.run(deviceId, userId, token);
  }
}

/** statements prepares the device statements once per store. */
function statements(db: Db) {
  return {
    byToken: db.prepare<[string, string], DeviceRow>("SELECT * FROM devices WHERE kind = ? AND token = ?"),
    updateInPlace: db.prepare<[string, string, string, string]>("UPDATE devices SET p256dh = ?, auth = ?, topic = ? WHERE id = ?"),
    countOfUser: db
      .prepare<[string, number], number>("SELECT COUNT(*) FROM (SELECT 1 FROM devices WHERE user_id = ? LIMIT ?)")
      .pluck(),
    deleteById: db.prepare<[string]>("DELETE FROM devices WHERE id = ?"),
    insert: db.prepare<[string, string, string, string, string, string, string, number]>(
      "INSERT INTO devices (id, user_id, kind, token, p256dh, auth, topic, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    deleteOfUser: db.prepare<[string, string]>("DELETE FROM devices WHERE id = ? AND user_id = ?"),
    deleteWithToken: db.prepare<[string, string, string]>("DELETE FROM devices WHERE id = ? AND user_id = ? AND token = ?"),
    ofUser: db.prepare<[string], DeviceRow>("SELECT * FROM devices WHERE user_id = ? ORDER BY created_at, id"),
  };
}

function toDevice(r: DeviceRow): Device {
  return {
    id: r.id,
    userId: r.user_id,
    kind: r.kind as PushKind,
    token: r.token,
    p256dh: r.p256dh,
    auth: r.auth,
    topic: r.topic,
    createdAt: r.created_at,
  };
}
