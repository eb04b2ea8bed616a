/** @mirrorplane/sample-backend — the local topology: the small JSON API used as production and staging, and nginx as the mirroring proxy, for the demo, tests and benchmarks. */
export { SampleBackend, type SampleBackendOptions, type ReceivedRequest } from './sample-backend.js';
export { NginxError } from '@mirrorplane/core';
export { NginxMirror, findNginx, renderNginxMirrorConfig, type NginxMirrorOptions } from './nginx-mirror.js';
