# One small image for every Mirrorplane role; the command picks the role:
#   docker run mirrorplane:0.1.0 ingress | worker | status | failed list | sample-backend …
# Build: docker build -t mirrorplane:0.1.0 .   (docker-compose.yml builds it for you)
#
# Node: the current LTS line (26), pinned to a release; the code also runs on Node 20.18+.
ARG NODE_IMAGE=node:26.11.1-bookworm-slim

# ---- build: install everything (TypeScript included) and compile src/ to lib/ ----
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.base.json ./
COPY packages/core/package.json packages/core/
COPY packages/runtime/package.json packages/runtime/
COPY apps/ingress/package.json apps/ingress/
COPY apps/worker/package.json apps/worker/
COPY apps/sample-backend/package.json apps/sample-backend/
COPY apps/cli/package.json apps/cli/
# --ignore-scripts: the root `prepare` script compiles, and the sources are not copied yet.
RUN npm ci --ignore-scripts
COPY packages packages
COPY apps apps
RUN npx tsc -b

# ---- runtime: production dependencies and compiled output only ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages/core/package.json packages/core/
COPY packages/runtime/package.json packages/runtime/
COPY apps/ingress/package.json apps/ingress/
COPY apps/worker/package.json apps/worker/
COPY apps/sample-backend/package.json apps/sample-backend/
COPY apps/cli/package.json apps/cli/
# --ignore-scripts: `prepare` would run tsc, which is a dev dependency and not installed here;
# the compiled lib/ folders come from the build stage instead.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /src/packages/core/lib packages/core/lib
COPY --from=build /src/packages/runtime/lib packages/runtime/lib
COPY --from=build /src/apps/ingress/lib apps/ingress/lib
COPY --from=build /src/apps/worker/lib apps/worker/lib
COPY --from=build /src/apps/sample-backend/lib apps/sample-backend/lib
COPY --from=build /src/apps/cli/lib apps/cli/lib
COPY --from=build /src/apps/cli/bin apps/cli/bin
RUN chmod +x apps/cli/bin/mirrorplane.js && ln -s /app/apps/cli/bin/mirrorplane.js /usr/local/bin/mirrorplane

# The node image's unprivileged user (uid 1000); nothing here needs root.
USER node
# Traffic port of the ingress, admin ports of the ingress and the worker.
EXPOSE 8080 9090 9091
# The CLI handles SIGTERM/SIGINT itself (graceful shutdown), so it can run as PID 1.
ENTRYPOINT ["mirrorplane"]
CMD ["--help"]
