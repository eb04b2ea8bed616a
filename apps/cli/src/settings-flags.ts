import { Option, type Command } from 'commander';
import { DEFAULT_ADMIN_PORT, SETTINGS, type Role, type SettingKey } from '@mirrorplane/core';
import type { Flags } from './process.js';

/**
 * Role flags derived from the one settings table in core (graphile/worker's `argvToPreset`
 * model): each flag's name, help text, environment variable and default come from
 * `SETTINGS`, so `--help` cannot drift from what `loadConfig` does.
 */

/** Settings every command that talks to Redis takes. */
export const CONNECTION_SETTINGS = ['redisUrl', 'prefix', 'redisConnectTimeoutMs', 'logLevel'] as const satisfies readonly SettingKey[];

/** Settings that have a flag. */
export type FlagSettingKey = { [K in SettingKey]: (typeof SETTINGS)[K] extends { flag: string } ? K : never }[SettingKey];

/** The default a role sees for a setting, as help prints it; undefined when there is none. */
export function settingDefault(key: SettingKey, role: Role): string | undefined {
  if (key === 'adminPort') return String(DEFAULT_ADMIN_PORT[role]);
  const value = (SETTINGS[key] as { default?: unknown }).default;
  return value === undefined ? undefined : String(value);
}

/** The help line of a setting's flag: its doc, its environment variable, its default. */
export function settingHelp(key: FlagSettingKey, role: Role, note?: string): string {
  const setting = SETTINGS[key];
  const fallback =
    note ??
    (settingDefault(key, role) !== undefined
      ? `default ${settingDefault(key, role)}`
      : (setting as { requiredBy?: readonly Role[] }).requiredBy?.includes(role)
        ? 'required'
        : undefined);
  return `${setting.doc} (env ${setting.env}${fallback ? `, ${fallback}` : ''})`;
}

/** The `<value>` placeholder of a flag. */
function placeholder(key: FlagSettingKey): string {
  const flag = SETTINGS[key].flag;
  if (key === 'stagingRateLimit') return '<cap>';
  if (key === 'orderBy') return '<key>';
  if (/url|staging/i.test(key)) return '<url>';
  if (/host/i.test(key)) return '<addr>';
  if (key === 'logLevel') return '<level>';
  if (key === 'prefix') return '<prefix>';
  return flag.includes('timeout') ? '<ms>' : '<n>';
}

/**
 * Adds the flags of `keys` to a command, help and default text from the settings table.
 * `notes` replaces the default part of a help line where the command does something else
 * (`start` starts a sample staging when `--staging` is not given).
 */
export function addSettingFlags(command: Command, role: Role, keys: readonly FlagSettingKey[], notes: Partial<Record<FlagSettingKey, string>> = {}): Command {
  for (const key of keys) {
    const option = new Option(`${SETTINGS[key].flag} ${placeholder(key)}`, settingHelp(key, role, notes[key]));
    command.addOption(option);
  }
  command.option('--config <file>', 'YAML or JSON config file (env MIRRORPLANE_CONFIG)');
  return command;
}

/** The setting values a command's parsed options carry, by setting key (strings, validated by loadConfig). */
export function settingFlags(command: Command): Flags {
  const options = command.opts<Record<string, unknown>>();
  const flags: Flags = {};
  for (const option of command.options) {
    const value = options[option.attributeName()];
    if (typeof value !== 'string') continue;
    if (option.long === '--config') {
      flags.config = value;
      continue;
    }
    const key = (Object.keys(SETTINGS) as SettingKey[]).find((k) => (SETTINGS[k] as { flag?: string }).flag === option.long);
    if (key) flags[key] = value;
  }
  return flags;
}
