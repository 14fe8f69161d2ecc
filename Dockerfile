# cachet: build in the Rust image, run in slim Debian as a non-root user.
#
#   docker build -t cachet .
#   docker run --rm -p 8080:8080 -e CACHET_UPSTREAM=http://origin.example:80 cachet

FROM rust:1.95-slim-trixie AS build
WORKDIR /src
# The image carries a stripped binary (about 8 MB instead of 75 MB): the release profile keeps
# line tables for profiling with callgrind, which a container has no use for. Set for the whole
# stage so the dependency layer and the crate are built with the same profile.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependency layer: compile every dependency against placeholder sources, so that this layer is
# rebuilt only when Cargo.toml or Cargo.lock changes, not on every source edit. The bench targets
# are declared in Cargo.toml, so they need placeholders too.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/store.rs \
    && echo 'fn main() {}' > benches/request_path.rs \
    && echo 'fn main() {}' > benches/purge.rs \
    && cargo build --release --locked --bin cachet \
    && rm -rf src benches

# The real sources. Their mtimes may be older than the placeholders' build, so touch them to make
# cargo rebuild the crate itself.
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin cachet \
    && cp target/release/cachet /usr/local/bin/cachet

FROM debian:trixie-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cachet
COPY --from=build /usr/local/bin/cachet /usr/local/bin/cachet
# The system roots https:// upstreams are verified against: the bundle the build image's
# ca-certificates package made (the slim runtime image has none).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 10001
# Listen on every interface inside the container; publish the admin port to trusted networks only.
ENV CACHET_LISTEN=0.0.0.0:8080 \
    CACHET_ADMIN=0.0.0.0:9091
EXPOSE 8080 9091
# `cachet healthcheck` asks GET /health on CACHET_ADMIN: 503 while draining marks it unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["cachet", "healthcheck"]
# SIGTERM (docker stop) drains in-flight requests for up to --shutdown-timeout (30s by default);
# give `docker stop -t` / stop_grace_period a little more than that.
ENTRYPOINT ["cachet"]
CMD ["serve"]
