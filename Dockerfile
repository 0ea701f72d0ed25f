# syntax=docker/dockerfile:1
# Image of the insights-privacy command-line tool, for a Kubernetes Job next
# to Coder (docs/examples/kubernetes-job.yaml) or a one-off `docker run`:
#
#   docker build -t registry.example.com/insights-privacy:0.1.0 .
#   docker run --rm -e INSIGHTS_PRIVACY_DATABASE_URL='postgres://...' \
#     registry.example.com/insights-privacy:0.1.0 status --check --no-counts

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# npm ci installs every dependency and, through the prepare script, compiles
# src/ into dist/. The prune then drops the compiler and test packages.
RUN npm ci
RUN npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json ./
COPY bin ./bin
COPY sql-templates ./sql-templates
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The node user of the base image, by number, so that Kubernetes can verify
# runAsNonRoot without a user database.
USER 1000:1000
ENTRYPOINT ["node", "/app/bin/insights-privacy.js"]
