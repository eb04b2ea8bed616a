/** @mirrorplane/worker — replays stream entries to staging. */
export { ReplayWorker, type ReplayWorkerOptions } from './replay-worker.js';
export { StagingClient, originFormPath, type CopyOutcome, type ReplayOptions, type ReplayOutcome } from './replay.js';
export { StagingResponseError, WireRequestError } from '@mirrorplane/core';
export { Http1Origin, encodeRequest, type WireRequest, type WireResponse } from './http1-client.js';
