# syntax=docker/dockerfile:1
# The winipam controller image: the release binary on distroless (no shell, no package
# manager), running as the distroless `nonroot` user (65532).
#
#   docker build -t winipam:dev .
#
# The builder is Debian 12 (bookworm) like the runtime image, so the binary's glibc matches.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target dir (aws-sdk-ec2 alone is minutes of a
# release build) between builds; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin winipam \
    && cp target/release/winipam /winipam

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /winipam /usr/local/bin/winipam
USER nonroot
# Metrics and health (/metrics, /healthz, /readyz); admission webhooks (TLS).
EXPOSE 8080 9443
ENTRYPOINT ["/usr/local/bin/winipam", "run"]
