// A hooks module with a `post` only: logs what staging answered. Header values named in
// `redactHeaders` are redacted by the hook logger, and bodies are logged as their size.

/**
 * @param {import('@mirrorplane/core').ReplayResponse} response
 * @param {import('@mirrorplane/core').OutgoingRequest} request
 * @param {import('@mirrorplane/core').HookContext} ctx
 */
export function post(response, request, ctx) {
  ctx.log.info(
    { method: request.method, path: request.path, status: response.status, ms: Math.round(response.ms), headers: response.headers, sent: request.headers },
    'staging answered',
  );
}

// The body is not read here: the worker may discard it unread (recording reads its own copy).
export const needsResponseBody = false;
