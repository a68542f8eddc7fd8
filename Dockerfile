# Duffy: multi-stage build on the current Node LTS (22, supported until April 2027).
# Build stage: dev dependencies and a compiler for better-sqlite3, then only production dependencies are kept.
FROM node:22-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/duffy
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY .swcrc tsconfig.json ./
COPY src ./src
COPY projections ./projections
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# Runtime stage: Node, Ansible (with the community collections the baremetal/vm drivers use), no compiler, no dev deps.
FROM node:22-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ansible-core ansible python3 openssh-client curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/duffy
COPY --from=build /opt/duffy/package.json ./
COPY --from=build /opt/duffy/node_modules ./node_modules
COPY --from=build /opt/duffy/dist ./dist
COPY ansible ./ansible
COPY config ./config
# The ledger, read models, artifacts and secrets live here; Duffy runs as the image's unprivileged `node` user.
RUN mkdir -p /var/lib/duffy && chown node:node /var/lib/duffy
ENV NODE_ENV=production DUFFY_DATA_DIR=/var/lib/duffy
USER node
EXPOSE 8080
CMD ["node", "dist/src/main.js"]
