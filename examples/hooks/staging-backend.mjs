// A hooks module with a `pre` only: every request gets a header that tells staging it is
// replayed traffic, and goes to the origin named `backend` (see examples/hooks-js.yaml).
// A hook chooses an origin by name; only origins listed in the config are ever contacted.

/** @param {import('@mirrorplane/core').OutgoingRequest} request */
export function pre(request) {
  request.headers.push('x-mirrorplane-env', 'staging');
  request.origin = 'backend';
  return request;
}
