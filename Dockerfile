# Builds the three Warren binaries into one small image.
# The dependency layer is cached: it is rebuilt only when a manifest or the
# lock file changes, not when the sources do.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/
COPY scheduler/Cargo.toml scheduler/
COPY worker/Cargo.toml worker/
COPY producer/Cargo.toml producer/
COPY cli/Cargo.toml cli/
COPY harness/Cargo.toml harness/
COPY tests/Cargo.toml tests/
COPY bench/Cargo.toml bench/
# Stub sources with the manifests' targets, so that this layer builds (and
# caches) every dependency of the three binaries and nothing of Warren's.
RUN for c in shared scheduler worker producer cli harness bench; do mkdir -p $c/src && echo 'fn main() {}' > $c/src/main.rs && touch $c/src/lib.rs; done \
 && mkdir -p tests/integration tests/chaos && touch tests/lib.rs \
 && echo 'fn main() {}' > tests/integration/main.rs && echo 'fn main() {}' > tests/chaos/main.rs \
 && cargo build --release --bins -p warren-scheduler -p warren-worker -p warren-cli \
 && rm -rf shared/src scheduler/src worker/src producer/src cli/src harness/src bench/src tests
COPY . .
RUN touch shared/src/lib.rs scheduler/src/lib.rs worker/src/lib.rs producer/src/lib.rs cli/src/main.rs \
 && cargo build --release --bins -p warren-scheduler -p warren-worker -p warren-cli

FROM debian:bookworm-slim
# tini runs as PID 1: it passes SIGTERM on to the Warren process (graceful
# shutdown) and reaps orphans. A `shell` task's killed process group leaves
# orphans re-parented to PID 1; a Warren process there would never reap
# them and they would pile up as zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home /data warren && mkdir -p /data && chown warren /data
COPY --from=build /src/target/release/warren-scheduler /src/target/release/warren-worker /src/target/release/warren /usr/local/bin/
COPY examples /examples
USER warren
WORKDIR /data
ENV WARREN_STORE=/data/warren.db
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["warren-scheduler"]
