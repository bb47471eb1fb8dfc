# Container image of the pushtoken server.
#
#   docker build -t pushtoken .
#   docker run -d -p 6443:6443 -v pushtoken-data:/data pushtoken
#   docker run --rm -i -v pushtoken-data:/data pushtoken user add alice_1 --password-stdin
#
# By default the image keeps its SQLite database in the /data volume; set
# DATABASE_URL=postgres://... to use PostgreSQL instead (see docker-compose.yml).
# Checked by .ci/docker-lint (hadolint).

# ---------------------------------------------------------------- build stage
# Cargo.lock needs rustc >= 1.89 (uuid); 1.95 is the toolchain the project is
# developed and tested with. Override with --build-arg RUST_VERSION=...
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /app

# Dependency layer: build every dependency against a dummy crate, so that a
# change to src/ alone does not rebuild them. (No build.rs; the SQLite library
# is compiled from source by libsqlite3-sys with the image's gcc.) Cargo reads
# every workspace member, so tests/macros (the integration tests' attributes,
# not built here) comes too.
COPY Cargo.toml Cargo.lock ./
COPY tests/macros ./tests/macros
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src \
        target/release/pushtoken* \
        target/release/libpushtoken* \
        target/release/deps/pushtoken-* \
        target/release/deps/libpushtoken-* \
        target/release/.fingerprint/pushtoken-*

# The real build. migrations/ must be here: sqlx::migrate!("./migrations/...")
# embeds both backends' migrations into the binary at compile time.
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/pushtoken /out/pushtoken

# -------------------------------------------------------------- runtime stage
# Same Debian release as the build stage, so the binary's glibc matches.
FROM debian:bookworm-slim AS runtime

# curl only serves the HEALTHCHECK below; ca-certificates for outgoing TLS.
# Versions are not pinned (DL3008): Debian replaces them with security updates
# within a release, and the base tag already fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user owning /data. A named volume mounted there takes this
# ownership; a bind-mounted host folder must be writable by uid 10001.
RUN groupadd --system --gid 10001 pushtoken \
    && useradd --system --uid 10001 --gid pushtoken --home-dir /data \
        --no-create-home --shell /usr/sbin/nologin pushtoken \
    && mkdir -p /data \
    && chown pushtoken:pushtoken /data

COPY --from=build /out/pushtoken /usr/local/bin/pushtoken

# DL3064 (possible secret in ENV) fires on the "TOKEN" in PUSHTOKEN_*: none of
# these is a secret. Pass PUSHTOKEN_API_KEY at run time, never here.
# hadolint ignore=DL3064
ENV DATABASE_URL=sqlite:///data/pushtoken.db \
    PUSHTOKEN_LISTEN=0.0.0.0:6443 \
    PUSHTOKEN_PUSH_LISTEN=0.0.0.0:11001 \
    RUST_LOG=info

WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
# The API, and the push socket (TLS) the phones and integrations hold open.
EXPOSE 6443 11001

# GET /healthz answers 200 while the process is alive (see README).
# The port follows PUSHTOKEN_LISTEN; HTTPS (certificate not verified: it is
# the server's own) when PUSHTOKEN_TLS_CERT is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/bin/sh", "-c", "s=http; [ -z \"${PUSHTOKEN_TLS_CERT:-}\" ] || s=https; exec curl -fsSk -o /dev/null --max-time 4 \"$s://127.0.0.1:${PUSHTOKEN_LISTEN##*:}/healthz\""]

# The server stops gracefully on SIGTERM (the default stop signal): it lets
# in-flight requests finish for up to 30 s, so give `docker stop` time (-t 35).
ENTRYPOINT ["pushtoken"]
CMD ["serve"]
