import type { Command } from 'commander';
import { InternalError } from '@mirrorplane/core';
import { buildProgram } from './main.js';
import type { Io } from './io.js';

/**
 * The command reference in README.md and docs/OPERATIONS.md, generated from the program
 * itself (so from the settings table): `node apps/cli/scripts/reference.mjs --write`
 * rewrites the marked sections, and a test fails when they differ from `--help`.
 */

const quiet: Io = {
  out: () => undefined,
  err: () => undefined,
  setExit: () => undefined,
  stdoutIsTTY: false,
  stderrIsTTY: false,
  stdinIsTTY: false,
  confirm: async () => false,
};

/** Every command that runs (leaves of the tree), with its full name. */
function leaves(command: Command, path: string[] = []): { name: string; command: Command }[] {
  return command.commands.flatMap((sub) => {
    const full = [...path, sub.name()];
    return sub.commands.length > 0 ? leaves(sub, full) : [{ name: full.join(' '), command: sub }];
  });
}

/** The `--help` text of every command, one fenced block each (docs/OPERATIONS.md). */
export function helpReference(): string {
  const program = buildProgram(quiet);
  let out = `Generated from \`mirrorplane <command> --help\` (\`node apps/cli/scripts/reference.mjs --write\`).\n`;
  for (const { name, command } of leaves(program)) {
    out += `\n### \`mirrorplane ${name}\`\n\n\`\`\`\n$ mirrorplane ${name} --help\n${command.helpInformation().trimEnd()}\n\`\`\`\n`;
  }
  return out;
}

/** One line per command with every flag it takes (the README). */
export function synopsisReference(): string {
  const program = buildProgram(quiet);
  const rows = leaves(program).map(({ name, command }) => {
    const args = command.registeredArguments.map((a) => (a.required ? `<${a.name()}${a.variadic ? '...' : ''}>` : `[${a.name()}${a.variadic ? '...' : ''}]`));
    const flags = command.options.map((o) => `\`${o.flags.replace(/, /, '|')}\``).join(' ');
    return `| \`mirrorplane ${[name, ...args].join(' ')}\` | ${command.description().replace(/\|/g, '\\|')} | ${flags} |`;
  });
  return (
    ['| command | what | flags |', '|---|---|---|', ...rows, ''].join('\n') +
    '\nEvery command also takes `-h, --help`; `mirrorplane --version` prints the version.\n'
  );
}

/** Replaces the text between `<!-- name:start -->` and `<!-- name:end -->`. */
export function replaceSection(text: string, name: string, body: string): string {
  const start = `<!-- ${name}:start -->`;
  const end = `<!-- ${name}:end -->`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i === -1 || j === -1 || j < i) throw new InternalError(`no ${start} … ${end} section`);
  return `${text.slice(0, i + start.length)}\n${body}${text.slice(j)}`;
}
