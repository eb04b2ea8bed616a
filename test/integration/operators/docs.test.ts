import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { helpReference, replaceSection, synopsisReference } from '../../../apps/cli/src/reference.js';
import { runCli } from '../../helpers/index.js';

// README's command reference and docs/OPERATIONS.md list every command and flag as --help prints them.

const read = (path: string) => readFileSync(fileURLToPath(new URL(`../../../${path}`, import.meta.url)), 'utf8');

test('the command references in README.md and docs/OPERATIONS.md are what --help prints (node apps/cli/scripts/reference.mjs --write)', () => {
  const readme = read('README.md');
  assert.equal(replaceSection(readme, 'cli-synopsis', synopsisReference()), readme, 'README.md is out of date');
  const operations = read('docs/OPERATIONS.md');
  assert.equal(replaceSection(operations, 'cli-reference', helpReference()), operations, 'docs/OPERATIONS.md is out of date');
});

test('the generated reference is the real --help of the real executable, for every command', async () => {
  const operations = read('docs/OPERATIONS.md');
  const blocks = [...operations.matchAll(/```\n\$ mirrorplane ([a-z -]+) --help\n([\s\S]*?)\n```/g)];
  assert.ok(blocks.length >= 13, `${blocks.length} commands documented`);
  for (const [, command, text] of blocks) {
    const help = await runCli([...command!.split(' '), '--help'], {});
    assert.equal(help.code, 0);
    assert.equal(help.stdout.trimEnd(), text, `mirrorplane ${command} --help`);
  }
  const top = await runCli(['--help'], {});
  const commands = top.stdout.slice(top.stdout.indexOf('Commands:'));
  assert.ok(commands.length > 20);
  for (const name of commands.matchAll(/^ {2}([a-z][a-z-]*)/gm)) {
    if (name[1] === 'help') continue;
    assert.ok(
      blocks.some(([, c]) => c === name[1] || c!.startsWith(`${name[1]} `)),
      `${name[1]} documented`,
    );
  }
});

test('no document sends users to npx mirrorplane outside the repository', () => {
  for (const path of [
    'README.md',
    'docs/OPERATIONS.md',
    'docs/PRODUCTION-RESPONSES.md',
    'docs/CONFIG.md',
    'docs/SCALING.md',
    'docs/RELIABILITY.md',
    'docs/SECURITY.md',
    'docs/TOPOLOGY.md',
  ]) {
    const lines = read(path)
      .split('\n')
      .filter((l) => /npx mirrorplane/.test(l) && !/^Never `npx mirrorplane` outside this repository/.test(l));
    assert.deepEqual(lines, [], path);
  }
});
