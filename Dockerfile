# syntax=docker/dockerfile:1

# Build: the whole workspace, release profile, exactly the locked versions.
FROM rust:1-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin warden \
    && strip target/release/warden
# A minimal root: the binary, the shared libraries it links (as ldd lists
# them, so the list follows the architecture), a user and a data directory.
RUN mkdir -p /rootfs/etc /rootfs/var/lib/warden \
    && cp target/release/warden /rootfs/warden \
    && ldd target/release/warden \
       | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' \
       | xargs -I{} cp --parents --dereference {} /rootfs \
    && echo 'warden:x:10001:10001:warden:/var/lib/warden:/sbin/nologin' > /rootfs/etc/passwd \
    && echo 'warden:x:10001:' > /rootfs/etc/group \
    && chown 10001:10001 /rootfs/var/lib/warden

# Run: nothing but that root, as an unprivileged user.
FROM scratch
# COPY --from keeps ownership: the data directory belongs to the user.
COPY --from=build /rootfs/ /
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
    CMD ["/warden", "healthcheck"]
ENTRYPOINT ["/warden"]
CMD ["serve"]
