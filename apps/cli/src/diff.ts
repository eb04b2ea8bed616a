import { formatCount } from './format.js';
import type { Redis } from 'ioredis';
import { productionKeys } from '@mirrorplane/core';

/** Comparison results of one route. */
export interface RouteDiffSummary {
  route: string;
  compared: number;
  mismatches: number;
  mismatchRate: number;
  /** The most common differing paths, most frequent first. */
  paths: { path: string; count: number }[];
}

/** Reads the comparison counters the workers keep in Redis. */
export async function readDiffSummary(redis: Redis, prefix: string, topPaths = 5): Promise<RouteDiffSummary[]> {
  const keys = productionKeys(prefix);
  const [routes, paths] = await Promise.all([redis.hgetall(keys.diffRoutes), redis.hgetall(keys.diffPaths)]);
  const byRoute = new Map<string, RouteDiffSummary>();
  const entry = (route: string) => {
    let e = byRoute.get(route);
    if (!e) byRoute.set(route, (e = { route, compared: 0, mismatches: 0, mismatchRate: 0, paths: [] }));
    return e;
  };
  for (const [field, value] of Object.entries(routes)) {
    const [route, result] = field.split('\t') as [string, string];
    const e = entry(route);
    e.compared += Number(value);
    if (result === 'mismatch') e.mismatches += Number(value);
  }
  for (const [field, value] of Object.entries(paths)) {
    const tab = field.indexOf('\t');
    entry(field.slice(0, tab)).paths.push({ path: field.slice(tab + 1), count: Number(value) });
  }
  for (const e of byRoute.values()) {
    e.mismatchRate = e.compared === 0 ? 0 : e.mismatches / e.compared;
    e.paths.sort((a, b) => b.count - a.count || a.path.localeCompare(b.path));
    e.paths = e.paths.slice(0, topPaths);
  }
  return [...byRoute.values()].sort((a, b) => b.mismatches - a.mismatches || a.route.localeCompare(b.route));
}

export function formatDiffSummary(rows: readonly RouteDiffSummary[]): string {
  if (rows.length === 0) return 'no comparisons yet (is `compare` set in the config, and are production responses arriving?)\n';
  const width = Math.max(5, ...rows.map((r) => r.route.length));
  let out = `${'ROUTE'.padEnd(width)}  COMPARED  MISMATCHES   RATE\n`;
  for (const r of rows) {
    out += `${r.route.padEnd(width)}  ${formatCount(r.compared).padStart(8)}  ${formatCount(r.mismatches).padStart(10)}  ${(r.mismatchRate * 100).toFixed(1).padStart(5)}%\n`;
    for (const p of r.paths) out += `${''.padEnd(width)}    ${p.path} (${formatCount(p.count)})\n`;
  }
  return out;
}

/** Requests an ID kind sent to staging with a production ID left in place. */
export interface IdMappingOutcomes {
  kind: string;
  /** Waited for a pending mapping (or a create in flight) up to `waitLimitMs`, then went on unmapped. */
  unmapped: number;
  /** Named an ID never seen in a production answer while no create of the kind was outstanding. */
  unknown: number;
}

/** Reads the ID-mapping outcome counters the workers keep in Redis, by kind. */
export async function readIdMappingOutcomes(redis: Redis, prefix: string): Promise<IdMappingOutcomes[]> {
  const fields = await redis.hgetall(productionKeys(prefix).idOutcomes);
  const byKind = new Map<string, IdMappingOutcomes>();
  for (const [field, value] of Object.entries(fields)) {
    const [kind, outcome] = field.split('\t') as [string, string];
    let e = byKind.get(kind);
    if (!e) byKind.set(kind, (e = { kind, unmapped: 0, unknown: 0 }));
    if (outcome === 'unmapped' || outcome === 'unknown') e[outcome] += Number(value);
  }
  return [...byKind.values()].sort((a, b) => a.kind.localeCompare(b.kind));
}

/** `unmapped follow-ups: order 0 after waiting, 2 unknown IDs` — one line per kind, nothing when no kind counted any. */
export function formatIdMappingOutcomes(rows: readonly IdMappingOutcomes[]): string {
  return rows.map((r) => `ids ${r.kind}: ${r.unmapped} unmapped after waiting, ${r.unknown} unknown (sent as they came)\n`).join('');
}
