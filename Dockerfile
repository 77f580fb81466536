# syntax=docker/dockerfile:1
# allot in a container: built in a Rust image, run from a slim Debian image
# as an unprivileged user. The same image runs `serve`, `worker`, `migrate`
# and `ctl` (see compose.yaml).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
# jemalloc's build settings (see .cargo/config.toml).
COPY .cargo .cargo
COPY src src
COPY migrations migrations
# Cache mounts keep the registry and the build between image builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin allot \
 && cp target/release/allot /usr/local/bin/allot \
 && strip /usr/local/bin/allot

FROM debian:bookworm-slim
# ca-certificates: TLS to the database and to mail providers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/allot --create-home allot \
 && install -d -o allot -g allot /var/lib/allot/mail
COPY --from=build /usr/local/bin/allot /usr/local/bin/allot
USER allot
WORKDIR /var/lib/allot
ENV ALLOT_LISTEN=0.0.0.0:8080 \
    ALLOT_DATABASE_URL=sqlite:///var/lib/allot/allot.db \
    ALLOT_MAIL_DIR=/var/lib/allot/mail \
    ALLOT_LOG_FORMAT=json
EXPOSE 8080
# Ready = the database answers (/readyz). The slim image has no curl; bash
# speaks enough HTTP/1.0 for this. `allot worker` serves no HTTP: compose
# turns this check off for it and it reports through `allot ctl` instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["allot"]
CMD ["serve"]
