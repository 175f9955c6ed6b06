# syntax=docker/dockerfile:1

# Build: the whole workspace, release profile, exactly the locked versions.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin warden \
    && strip target/release/warden

# Run: a slim Debian with one static-ish binary, as an unprivileged user.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 warden \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/warden --create-home warden
COPY --from=build /src/target/release/warden /usr/local/bin/warden
USER 10001:10001
WORKDIR /var/lib/warden
# Inside a container the service must listen beyond loopback; the SQLite
# default lives in the volume.
ENV WARDEN_LISTEN=0.0.0.0:50051 \
    WARDEN_HTTP_LISTEN=0.0.0.0:9090 \
    WARDEN_DATABASE_URL=sqlite:///var/lib/warden/warden.db?mode=rwc
VOLUME ["/var/lib/warden"]
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["warden", "healthcheck"]
ENTRYPOINT ["warden"]
CMD ["serve"]
