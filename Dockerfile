# syntax=docker/dockerfile:1
# The Fluxgate operator image: a release build on Debian bookworm, run on bookworm-slim as
# a non-root user (65532). The chart runs it with a read-only root filesystem; the Git
# clone cache and /tmp are emptyDir volumes.
#
# NOTE: written but never built here — the machines this project is developed on have no
# container runtime. The runtime libraries below are what `ldd target/release/fluxgate`
# lists on bookworm (libgit2 and libssh2 are vendored and linked statically; OpenSSL and
# zlib come from the system). Build with:
#   docker build -t ghcr.io/fluxgate-dev/fluxgate:$(cargo metadata --no-deps --format-version 1 | jq -r '.packages[] | select(.name=="fluxgate") | .version') .

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The workspace's test crates (test/kubesim, test/sim, e2e) are members, so Cargo needs
# their manifests, but only the operator binary is built, and without the `demo` feature: the
# image links no API simulator, simulated Flux or Git server (tests/product_without_test_world.rs).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin fluxgate \
 && cp target/release/fluxgate /usr/local/bin/fluxgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/fluxgate /usr/local/bin/fluxgate
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/fluxgate", "run"]
