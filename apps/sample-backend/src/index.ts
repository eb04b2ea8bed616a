/** @mirrorplane/sample-backend — the small JSON API used as production and staging in demos and tests. */
export { SampleBackend, type SampleBackendOptions, type ReceivedRequest } from './sample-backend.js';
