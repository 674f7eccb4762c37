# Multi-stage build of the static ipsecca binary onto a small runtime image.
# The sidecar needs the NSS tools (certutil, pk12util, crlutil), so the
# runtime is Debian slim with libnss3-tools rather than distroless.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/ipsecca ./cmd/ipsecca

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnss3-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --home-dir /var/lib/ipsecca ipsecca \
 && install -d -o ipsecca -g ipsecca -m 0700 /var/lib/ipsecca
COPY --from=build /out/ipsecca /usr/local/bin/ipsecca
# The CA runs unprivileged; the sidecar DaemonSet overrides the user to
# write the host's NSS database.
USER 65532
VOLUME /var/lib/ipsecca
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/ipsecca"]
CMD ["serve", "--data-dir", "/var/lib/ipsecca", "--listen", "0.0.0.0:8443"]
