/**
 * Setup through the real API (gRPC via connect-node): register users
 * (argon2id, so slow: done with bounded concurrency), create groups with
 * their members. Nothing is cached across runs.
 */
import { randomBytes } from "node:crypto";
import { type Client, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/chat/v1/auth_service_pb.js";
import { GroupService } from "../../gen/chat/v1/group_service_pb.js";
import type { Endpoints } from "./servers.js";

/** BenchUser is a registered user and its access token. */
export interface BenchUser {
  readonly index: number;
  readonly userId: string;
  readonly username: string;
  readonly token: string;
}

/** BenchGroup is a created group: its id, its head seq after setup and its members (indexes into users). */
export interface BenchGroup {
  readonly index: number;
  readonly groupId: string;
  readonly headSeq: number;
  readonly members: readonly number[];
}

/** Population is what setup built. */
export interface Population {
  readonly users: readonly BenchUser[];
  readonly groups: readonly BenchGroup[];
  readonly runId: string;
  readonly registerSeconds: number;
  readonly groupSeconds: number;
}

/** runPool runs `task(i)` for i in [0, n) with at most `concurrency` at once; rejects on the first failure. */
export async function runPool(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (next < n && failed === undefined) {
      const i = next++;
      try {
        await task(i);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, n)) }, worker));
  if (failed !== undefined) throw failed;
}

const PASSWORD = "bench password 1234";

/** PopulationShape says how many users and groups to build. */
export interface PopulationShape {
  readonly groups: number;
  readonly members: number;
  /**
   * users: how many distinct users (default groups × members, every member
   * its own user). Fewer users than memberships puts each user in several
   * groups (round-robin), as in the connections mode.
   */
  readonly users?: number;
  readonly registerConcurrency: number;
  readonly groupConcurrency: number;
  readonly log: (line: string) => void;
}

/** buildPopulation registers the users and creates the groups. */
export async function buildPopulation(endpoints: Endpoints, shape: PopulationShape): Promise<Population> {
  const runId = randomBytes(3).toString("hex");
  const transport = (url: string) => createGrpcTransport({ baseUrl: url });
  const auth: Client<typeof AuthService> = createClient(AuthService, transport(endpoints.auth));
  const groupTransport = transport(endpoints.group);
  const userCount = shape.users ?? shape.groups * shape.members;
  if (shape.members > userCount) throw new Error(`--members ${shape.members} needs at least that many users (have ${userCount})`);
  const users: BenchUser[] = new Array(userCount);
  const t0 = performance.now();
  let done = 0;
  let lastLog = t0;
  await runPool(userCount, shape.registerConcurrency, async (i) => {
    const username = `b${runId}u${i}`;
    const res = await withRetry(() => auth.register({ username, password: PASSWORD }, { timeoutMs: 60_000 }));
    const token = res.tokens?.accessToken;
    const userId = res.user?.userId;
    if (!token || !userId) throw new Error(`register ${username}: no token or user id`);
    users[i] = { index: i, userId, username, token };
    done++;
    const now = performance.now();
    if (now - lastLog > 5000) {
      lastLog = now;
      shape.log(`registered ${done}/${userCount} users (${((done * 1000) / (now - t0)).toFixed(0)}/s)`);
    }
  });
  const registerSeconds = (performance.now() - t0) / 1000;
  shape.log(`registered ${userCount} users in ${registerSeconds.toFixed(1)} s`);

  // Group g has members (g × members + k) mod users for k in [0, members): with
  // users = groups × members every user is in exactly one group.
  const groups: BenchGroup[] = new Array(shape.groups);
  const t1 = performance.now();
  await runPool(shape.groups, shape.groupConcurrency, async (g) => {
    const members: number[] = [];
    for (let k = 0; k < shape.members; k++) members.push((g * shape.members + k) % userCount);
    const owner = users[members[0] as number] as BenchUser;
    const client = createClient(GroupService, groupTransport);
    const res = await withRetry(() =>
      client.createGroup(
        { name: `bench ${runId} ${g}`, memberUsernames: members.slice(1).map((m) => (users[m] as BenchUser).username) },
        { headers: { authorization: `Bearer ${owner.token}` }, timeoutMs: 60_000 },
      ),
    );
    const group = res.group;
    if (!group) throw new Error(`createGroup ${g}: no group`);
    groups[g] = { index: g, groupId: group.groupId, headSeq: Number(group.headSeq), members };
  });
  const groupSeconds = (performance.now() - t1) / 1000;
  shape.log(`created ${shape.groups} groups of ${shape.members} in ${groupSeconds.toFixed(1)} s`);
  return { users, groups, runId, registerSeconds, groupSeconds };
}

/**
 * inventPopulation builds the same users and groups as buildPopulation, with
 * invented ids and no calls, for the reference server (which has no users):
 * each user's "token" is the comma-separated ids of its groups, which the
 * reference reads to join a connection to them (bench/reference/broadcast-server.ts).
 */
export function inventPopulation(shape: Omit<PopulationShape, "log">): Population {
  const runId = randomBytes(3).toString("hex");
  const userCount = shape.users ?? shape.groups * shape.members;
  if (shape.members > userCount) throw new Error(`--members ${shape.members} needs at least that many users (have ${userCount})`);
  const groups: BenchGroup[] = [];
  const groupsOf: string[][] = Array.from({ length: userCount }, () => []);
  for (let g = 0; g < shape.groups; g++) {
    // The same membership as buildPopulation's.
    const members: number[] = [];
    for (let k = 0; k < shape.members; k++) members.push((g * shape.members + k) % userCount);
    const groupId = `r${runId}g${g}`;
    for (const m of members) groupsOf[m]?.push(groupId);
    groups.push({ index: g, groupId, headSeq: 0, members });
  }
  const users: BenchUser[] = groupsOf.map((ids, i) => ({ index: i, userId: `r${runId}u${i}`, username: `r${runId}u${i}`, token: ids.join(",") }));
  return { users, groups, runId, registerSeconds: 0, groupSeconds: 0 };
}

/** withRetry retries a setup call a few times on UNAVAILABLE / RESOURCE_EXHAUSTED (bounded). */
async function withRetry<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      const code = (e as { code?: number }).code;
      if (attempt >= 5 || (code !== 14 && code !== 8)) throw e;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}
