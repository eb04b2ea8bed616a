import type { RedisClient } from './redis.js';

/**
 * What Redis says about a stream's consumer groups and consumers (`XINFO GROUPS`,
 * `XINFO CONSUMERS`), parsed in this one place. Redis answers with flat `[name, value, …]`
 * arrays whose fields differ across versions (`entries-read` and `lag` are Redis 7), so
 * the fields that may be missing are null.
 */

/** One consumer group of a stream. */
export interface GroupInfo {
  readonly name: string;
  readonly consumers: number;
  /** Entries delivered to a consumer and not acknowledged. */
  readonly pending: number;
  readonly lastDeliveredId: string;
  /** Entries the group has read (Redis 7), null when unknown. */
  readonly entriesRead: number | null;
  /** Entries not yet delivered to the group (Redis 7), null when unknown (e.g. after XDEL or XTRIM past the group). */
  readonly lag: number | null;
}

/** One consumer of a group. */
export interface ConsumerInfo {
  readonly name: string;
  readonly pending: number;
  /** Since the consumer's last attempted interaction, in ms. */
  readonly idleMs: number;
}

function replyFields(reply: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = reply[i + 1];
  return out;
}

function numberOrNull(value: unknown): number | null {
  return typeof value === 'number' ? value : null;
}

function isNoSuchKey(error: unknown): boolean {
  return error instanceof Error && /no such key/i.test(error.message);
}

/** Every consumer group of a stream; empty when the stream does not exist. Redis errors are thrown. */
export async function readGroups(redis: RedisClient, stream: string): Promise<GroupInfo[]> {
  let reply: unknown;
  try {
    reply = await redis.xinfo('GROUPS', stream);
  } catch (error) {
    if (isNoSuchKey(error)) return [];
    throw error;
  }
  return (reply as unknown[]).map((g) => {
    const f = replyFields(g);
    return {
      name: String(f.name),
      consumers: Number(f.consumers ?? 0),
      pending: Number(f.pending ?? 0),
      lastDeliveredId: String(f['last-delivered-id'] ?? '0-0'),
      entriesRead: numberOrNull(f['entries-read']),
      lag: numberOrNull(f.lag),
    };
  });
}

/** One consumer group of a stream, or null when the stream or the group does not exist. */
export async function readGroup(redis: RedisClient, stream: string, group: string): Promise<GroupInfo | null> {
  return (await readGroups(redis, stream)).find((g) => g.name === group) ?? null;
}

/** The consumers of a group; empty when the stream or the group does not exist. */
export async function readConsumers(redis: RedisClient, stream: string, group: string): Promise<ConsumerInfo[]> {
  let reply: unknown;
  try {
    reply = await redis.xinfo('CONSUMERS', stream, group);
  } catch (error) {
    if (isNoSuchKey(error) || (error instanceof Error && /NOGROUP/.test(error.message))) return [];
    throw error;
  }
  return (reply as unknown[]).map((c) => {
    const f = replyFields(c);
    return { name: String(f.name), pending: Number(f.pending ?? 0), idleMs: Number(f.idle ?? 0) };
  });
}
