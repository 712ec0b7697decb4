# syntax=docker/dockerfile:1
#
# One image for every chat service; SERVICES (or --services=) picks what a container serves.
# Built and used by docker-compose.yml. The server runs compiled: `npm run build` (esbuild, a runtime
# dependency) writes dist/ in the image; tsx stays a runtime dependency for the migrations and the CLI.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- deps: production node_modules, native addons compiled here -------------------------------
FROM ${NODE_IMAGE} AS deps
# better-sqlite3 is a native addon: its install script downloads a prebuilt binary and falls back
# to compiling with node-gyp (python3, make, g++) when none matches. The toolchain stays in this
# stage only. (@node-rs/argon2 and esbuild ship prebuilt binaries as optional npm packages.)
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The project requires npm 11 (README): it honours package.json "allowScripts", the list of
# packages whose install scripts may run. node:20 ships npm 10.
RUN npm install -g npm@11 && npm --version
WORKDIR /app
COPY package.json package-lock.json ./
# The workspace of the TypeScript SDK (clients/typescript), which the CLI imports: npm ci links it.
COPY clients/typescript/package.json clients/typescript/package.json
# Exactly the lockfile, without devDependencies (buf, protoc-gen-es, TypeScript, grpc-js, @types).
RUN npm ci --omit=dev --no-audit --no-fund

# ---- runtime ----------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data
WORKDIR /app
# DATA_DIR holds the auth service's JWT signing key (and the SQLite file in embedded mode). Every
# process creates it at start, so it must exist and belong to the unprivileged user. A named
# volume mounted here starts with this ownership.
RUN mkdir -p /data && chown node:node /data
COPY --from=deps /app/node_modules ./node_modules
# Sources stay owned by root and read-only for the service user. .dockerignore keeps out
# node_modules, data, .git and local secrets.
COPY . .
# dist/: the server's TypeScript compiled to JavaScript (scripts/build-server.mjs), read-only for the service user.
RUN node scripts/build-server.mjs
USER node
EXPOSE 8080
# node is PID 1 and handles SIGTERM itself (graceful shutdown: health NOT_SERVING, streams told
# to reconnect, in-flight calls finish within SHUTDOWN_GRACE).
STOPSIGNAL SIGTERM
CMD ["node", "--enable-source-maps", "dist/services/main.js"]
