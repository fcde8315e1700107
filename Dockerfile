# syntax=docker/dockerfile:1
#
# plantd-ts: one image for every component, chosen by the first argument:
#   docker run IMAGE broker | state | metrics | gateway | echo | bus | dev (default)
# Configuration comes from PLANTD_<COMPONENT>_* variables or --flags after the
# component (see config/components.ts, README "Deployment", compose.yaml).

# Dependencies: rebuilt only when deno.json or deno.lock change. --frozen fails
# the build if the lock file does not match deno.json. npm packages go to
# /app/node_modules (nodeModulesDir "auto"); zeromq and libsql ship prebuilt
# native addons, so no install script is run.
FROM denoland/deno:2.9.6 AS deps
WORKDIR /app
COPY deno.json deno.lock ./
RUN deno install --frozen

# Sources, type-checked so that a broken tree fails the build, not the container.
FROM deps AS build
COPY . .
RUN deno check main.ts cli/main.ts deploy/healthcheck.ts

FROM denoland/deno:2.9.6
WORKDIR /app
COPY --from=build --chown=deno:deno /app /app
# The state and metrics databases of `dev`, or of `state`/`metrics` with the
# defaults below, live in /data: mount a volume there.
RUN mkdir -p /data && chown deno:deno /data
VOLUME /data
USER deno
# Container defaults: HTTP listens on every interface, databases in /data.
# Listening beyond loopback, the gateway (and so `dev`) needs a key to check
# tokens with: docker run -e PLANTD_GATEWAY_JWT_SECRET=$(openssl rand -base64 48) …
# and a health server's /metrics needs PLANTD_<COMPONENT>_METRICS_TOKEN (403
# without; /healthz, /livez, /readyz stay open). The broker and the buses keep
# their loopback default (`dev` runs them in-process): bound beyond it they
# refuse to start without CURVE keys (compose.yaml and deploy/k8s show how).
# Flags and PLANTD_* variables given at run time override them.
ENV PLANTD_GATEWAY_HOST=0.0.0.0 \
    PLANTD_BROKER_HEALTH_HOST=0.0.0.0 \
    PLANTD_BUS_HEALTH_HOST=0.0.0.0 \
    PLANTD_STATE_HEALTH_HOST=0.0.0.0 \
    PLANTD_METRICS_HEALTH_HOST=0.0.0.0 \
    PLANTD_MODULE_ECHO_HEALTH_HOST=0.0.0.0 \
    PLANTD_STATE_DB=/data/plantd-state.db \
    PLANTD_METRICS_DB=/data/plantd-metrics.db \
    PLANTD_GATEWAY_AUTH_DB=/data/plantd-auth.db
# gateway, health servers (broker, state, bus, metrics), broker, buses (the last
# two listen beyond loopback only when configured to, with CURVE keys)
EXPOSE 8080 8081 8082 8083 8084 9797 11000 11001 12000 12001 13000 13001
# The image has no curl: a small Deno script finds the running component and its
# health port and asks its /healthz.
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
  CMD ["deno", "run", "-A", "deploy/healthcheck.ts"]
ENTRYPOINT ["deno", "run", "-A", "main.ts"]
CMD ["dev"]
