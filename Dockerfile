# jetway-server image: built in a Rust image, run from a small distroless base as a non-root user.
# The image expects NATS_URL (a NATS server with JetStream); see docker-compose.yml.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p jetway-server

# glibc and libgcc, no shell, no package manager; the nonroot variant runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/jetway-server /usr/local/bin/jetway-server
USER nonroot:nonroot
ENV GRPC_PORT=8080 \
    HEALTH_PORT=8088 \
    HTTP_PORT=8081
EXPOSE 8080 8081 8088
ENTRYPOINT ["/usr/local/bin/jetway-server"]
