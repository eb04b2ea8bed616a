import type { Command } from 'commander';
import { ORIGIN_NAME, drainSeconds, partitionKeys, parseRateLimit, type RateLimit } from '@mirrorplane/core';
import { clearRateLimitOverride, listWorkers, readDeploymentStatus, readRateCaps, setRateLimitOverride, type RateCap } from '@mirrorplane/runtime';
import { configure, UsageError } from '../process.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import { operatorContext, withOperatorConnection } from '../connection.js';
import { formatDuration } from '../format.js';
import type { Io } from '../io.js';

/** `200/s, burst 40` or `off`. */
export function describeRateLimit(limit: RateLimit | null): string {
  return limit === null ? 'off' : `${limit.perSecond}/s, burst ${limit.burst}`;
}

/** The caps as lines, with the time to drain `waiting` entries at the default origin's cap. */
export function formatRateCaps(caps: readonly RateCap[], waiting: number | null): string {
  if (caps.length === 0) return 'rate caps: none (every staging origin uncapped)\n';
  let out = 'rate caps\n';
  for (const c of caps) {
    const source = c.source === 'override' ? '(live override)' : c.source === 'worker' ? "(a live worker's config)" : '(config)';
    out += `  ${c.origin.padEnd(12)} ${describeRateLimit(c.limit).padEnd(24)} ${source}\n`;
    if (c.origin === 'default' && waiting !== null) {
      const s = drainSeconds(waiting, c.limit);
      if (s !== null) out += `  ${''.padEnd(12)} ${waiting} entries waiting: about ${formatDuration(s * 1000)} to drain at the cap\n`;
    }
  }
  return out;
}

function originArg(text: string): string {
  if (!ORIGIN_NAME.test(text)) throw new UsageError(`origin: expected an origin name (1-64 characters of A-Z a-z 0-9 _ -), got ${JSON.stringify(text)}`);
  return text;
}

/**
 * `mirrorplane rate-limit show|set|clear`: the rate caps on the staging origins, shared by every
 * worker. `set` and `clear` write the live override the workers re-read every second: a change
 * takes effect within about a second, without a restart.
 */
export function registerRateLimit(program: Command, io: Io): void {
  const group = program.command('rate-limit').description('show or change, live, the cap on the requests each staging origin receives');
  const show = group.command('show').description('the caps in force (config and live overrides) and the time to drain the backlog at the cap');
  addSettingFlags(show, 'cli', [...CONNECTION_SETTINGS, 'stagingRateLimit']).option('--json', 'print one JSON object');
  show.action(async (options: { json?: boolean }) => {
    const config = configure('cli', settingFlags(show));
    const keys = partitionKeys(config.prefix, config.partitions);
    const { caps, waiting } = await withOperatorConnection(config, async ({ redis, queue }) => {
      const status = await readDeploymentStatus(redis, queue, keys);
      return { caps: await readRateCaps(redis, config.prefix, config.rateLimits), waiting: status.backlog + status.retrying };
    });
    if (options.json) {
      io.out(`${JSON.stringify({ caps, waiting, drainSeconds: drainSeconds(waiting, caps.find((c) => c.origin === 'default')?.limit ?? null) })}\n`);
      return;
    }
    io.out(operatorContext(config) + formatRateCaps(caps, waiting));
  });
  const set = group
    .command('set')
    .description('caps an origin live: <per second>[,<burst>] (200 or 200,50) or off; workers follow within a second')
    .argument('<origin>', 'the staging origin (default is STAGING_URL)')
    .argument('<cap>', '<per second>[,<burst>], or off');
  addSettingFlags(set, 'cli', CONNECTION_SETTINGS);
  set.action(async (origin: string, cap: string) => {
    const name = originArg(origin);
    let limit: RateLimit | null;
    try {
      limit = parseRateLimit(cap);
    } catch (error) {
      throw new UsageError(`cap: ${(error as Error).message}`);
    }
    const config = configure('cli', settingFlags(set));
    await withOperatorConnection(config, async ({ redis }) => {
      // A typo must not cap nothing in silence: the origin must be one this config or a live worker knows.
      const known = new Set(['default', ...Object.keys(config.origins)]);
      for (const worker of await listWorkers(redis, config.prefix, { prune: false })) for (const o of worker.origins ?? []) known.add(o);
      if (!known.has(name)) {
        throw new UsageError(
          `origin: ${JSON.stringify(name)} is not a staging origin of this config or of any live worker (known: ${[...known].sort().join(', ')}); pass the workers' --config to cap an origin before they start`,
        );
      }
      await setRateLimitOverride(redis, config.prefix, name, limit);
    });
    io.out(
      `${operatorContext(config)}rate cap of ${name}: ${describeRateLimit(limit)} (live override; \`mirrorplane rate-limit clear ${name}\` returns to the config)\n`,
    );
  });
  const clear = group
    .command('clear')
    .description("removes an origin's live override: the config's cap applies again")
    .argument('<origin>', 'the staging origin');
  addSettingFlags(clear, 'cli', CONNECTION_SETTINGS);
  clear.action(async (origin: string) => {
    const name = originArg(origin);
    const config = configure('cli', settingFlags(clear));
    const removed = await withOperatorConnection(config, ({ redis }) => clearRateLimitOverride(redis, config.prefix, name));
    io.out(operatorContext(config) + (removed ? `rate cap of ${name}: back to the config\n` : `${name} had no live override\n`));
  });
}
