import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

// No Envoy binary runs here (as in envoy-production-responses.test.ts): this reads the Lua
// filter of the Envoy variant that posts production's answers to the intake. It posts the body
// as production sent it (`response_handle:body()`), so a production that compresses its own
// answers posts gzip/br bytes; the intake can only decode them if the filter says so.
const root = fileURLToPath(new URL('../..', import.meta.url));
const envoy = parse(readFileSync(`${root}/envoy/envoy-production-responses.yaml`, 'utf8'));
type Any = Record<string, any>;
const manager: Any = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
const lua: string = manager.http_filters.find((f: Any) => f.name === 'envoy.filters.http.lua').typed_config.default_source_code.inline_string;

test("Envoy variant: production's Content-Encoding travels with the posted body, so compressed answers are decoded by the intake", () => {
  // The names the filter copies from production's headers into x-mirrorplane-headers.
  const copied =
    /ipairs\(\{([^}]*)\}\)/
      .exec(lua)?.[1]
      ?.match(/"[^"]+"/g)
      ?.map((n) => JSON.parse(n) as string) ?? [];
  assert.ok(
    copied.includes('content-encoding'),
    `the Lua filter forwards ${JSON.stringify(copied)}: without content-encoding a compressed production answer is stored as if plain (no ID learned, body mismatches)`,
  );
  assert.match(lua, /intake\["x-mirrorplane-headers"\] = /);
});

test("Envoy variant: an answer without a content type is not given one (application/octet-stream) that staging's answer lacks", () => {
  assert.doesNotMatch(lua, /octet-stream/, 'a 204 without content-type compares as a content-type mismatch');
  // Production's headers are only read (headers:get), never given a fallback value.
  assert.doesNotMatch(lua, /headers:get\("content-(type|encoding)"\)\s*or\b/);
});
