import { definePipeline, type HookContext, type OutgoingRequest } from '@mirrorplane/core';

/**
 * Tags each request with its tenant, so recordings and logs can be split per tenant, and
 * counts requests per tenant in the store every worker shares. The tenant comes from the
 * `x-tenant` header, else from the first label of the production host (acme.example.com).
 * Requests of the `internal` tenant are not replayed at all.
 */

function tenantOf(request: OutgoingRequest, ctx: HookContext): string {
  for (let i = 0; i < request.headers.length; i += 2) {
    if (request.headers[i]!.toLowerCase() === 'x-tenant') return request.headers[i + 1]!.toLowerCase();
  }
  for (let i = 0; i < ctx.mirrored.rawHeaders.length; i += 2) {
    if (ctx.mirrored.rawHeaders[i]!.toLowerCase() === 'host') return ctx.mirrored.rawHeaders[i + 1]!.split('.')[0]!.toLowerCase();
  }
  return 'unknown';
}

export default definePipeline({
  setup(ctx) {
    ctx.log.info({ origins: ctx.origins }, 'tenant tagging ready');
  },

  async pre(request, ctx) {
    const tenant = tenantOf(request, ctx);
    if (tenant === 'internal') return null;
    ctx.tags.tenant = tenant;
    request.headers.push('x-tenant-id', tenant);
    const seen = await ctx.store.incr(`tenant:${tenant}`, { ttlMs: 3_600_000 });
    request.headers.push('x-tenant-seq', String(seen));
    return request;
  },

  post(response, _request, ctx) {
    if (response.status >= 400) ctx.log.warn({ tenant: ctx.tags.tenant, status: response.status }, 'staging refused a tenant request');
  },
});
