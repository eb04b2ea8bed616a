import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

// A deadline raced against a promise (`Promise.race([p, new Promise((r) => setTimeout(r, 30_000))])`)
// whose timer is never cleared keeps the test file's process alive until it fires: the file ends
// its last test, then idles for the rest of the deadline (30 s each for three files before
// withDeadline in test/helpers/wait.ts). Every such race in test/ clears or unrefs its timer.

const self = fileURLToPath(import.meta.url);
const testRoot = join(dirname(self), '..');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

/** The text of each `Promise.race(...)` call's arguments (balanced parentheses). */
function races(text: string): string[] {
  const out: string[] = [];
  for (let at = text.indexOf('Promise.race('); at !== -1; at = text.indexOf('Promise.race(', at + 1)) {
    let depth = 0;
    let end = at + 'Promise.race'.length;
    for (; end < text.length; end++) {
      if (text[end] === '(') depth++;
      else if (text[end] === ')' && --depth === 0) break;
    }
    out.push(text.slice(at, end + 1));
  }
  return out;
}

/** The races in `text` whose setTimeout is neither unref'd nor kept in a variable the file clears. */
function leakingDeadlines(text: string): string[] {
  return races(text).filter((race) => {
    if (!race.includes('setTimeout(')) return false;
    if (race.includes('.unref()')) return false;
    const kept = /(\w+) = setTimeout\(/.exec(race);
    return !(kept && text.includes(`clearTimeout(${kept[1]})`));
  });
}

test('the detector flags a raced deadline left pending and accepts cleared, unref’d and helper ones', () => {
  const leaking = [
    `await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 30_000))]);`,
    `await Promise.race([\n  p,\n  new Promise<never>((_, reject) => setTimeout(() => reject(new Error('late')), 30_000)),\n]);`,
  ];
  const fine = [
    `await withDeadline(exited, 30_000, () => 'hung' as const);`,
    `Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error('x')), 30_000).unref())]);`,
    `let timer;\nconst code = await Promise.race([p, new Promise((r) => (timer = setTimeout(() => r('late'), 20_000)))]);\nclearTimeout(timer);`,
    `await Promise.race([a, b]);`,
  ];
  for (const text of leaking) assert.equal(leakingDeadlines(text).length, 1, text);
  for (const text of fine) assert.deepEqual(leakingDeadlines(text), [], text);
});

test('no file under test/ races a deadline whose timer outlives the race', () => {
  const files = sources(testRoot).filter((path) => path !== self); // this file quotes leaking races as examples
  assert.ok(files.length > 100, `found ${files.length} files under test/`);
  const found = files.flatMap((path) => leakingDeadlines(readFileSync(path, 'utf8')).map((race) => `${relative(testRoot, path)}: ${race}`));
  assert.deepEqual(found, [], 'use withDeadline (test/helpers/wait.ts), which clears its timer');
});
