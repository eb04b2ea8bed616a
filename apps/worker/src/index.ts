/** @mirrorplane/worker — replays stream entries to staging. */
export { ReplayWorker, type ReplayWorkerOptions } from './replay-worker.js';
export { StagingClient, originFormPath, type ReplayOutcome } from './replay.js';
