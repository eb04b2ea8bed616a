// One home for free ports: the runtime's, shared with the CLI and the benchmarks.
export { freePort } from '@mirrorplane/runtime';
