import type { Command } from 'commander';
import { startLocalStack } from '../local-stack.js';
import { CONNECTION_SETTINGS, addSettingFlags, settingFlags } from '../settings-flags.js';
import type { Io } from '../io.js';

export function registerStart(program: Command, io: Io): void {
  const command = program.command('start').description('all in one, for a first look: Redis (when REDIS_URL is unset), ingress, a worker and a sample staging');
  addSettingFlags(command, 'start', [...CONNECTION_SETTINGS, 'ingressPort', 'stagingUrl'], { stagingUrl: 'default: a sample staging backend started here' });
  command.action(async () => {
    await startLocalStack(settingFlags(command), io, process.env);
  });
}
