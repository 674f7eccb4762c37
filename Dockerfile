# The ipsecca image: the static binaries on Debian slim with the NSS tools (certutil, pk12util, crlutil)
# that the sidecar drives, so not distroless. One image serves the CA, the sidecar and the admin CLI:
# /usr/local/bin/ipsecca (everything) and /usr/local/bin/ipsecca-sidecar (the node agent alone, which
# the DaemonSet runs: without the CA's code it takes a fraction of the memory on every node).
#
# Two ways to build it:
# - `make image` (hack/image.sh; no registry needed): the base is a debootstrap-made
#   localhost/debian:bookworm-slim, the binaries are built outside and copied in:
#     podman build --build-arg BASE=localhost/debian:bookworm-slim --build-arg BINARY=prebuilt .
# - with a registry: `docker build .` compiles in golang:1.26-bookworm and runs on debian:bookworm-slim.
#   With podman/buildah pass `--build-arg BINARY=compile` explicitly: buildah (1.28) skips a stage named
#   only by an ARG's default value, then tries to pull "compile". The context keeps .git (see
#   .dockerignore) so Go stamps the revision that `ipsecca version` prints. Both paths were checked to
#   give the same image here (the binary is reproducible: -trimpath, same revision).
ARG BUILDER=golang:1.26-bookworm
ARG BASE=debian:bookworm-slim
# BINARY: the stage the binaries come from: "compile" builds them in BUILDER, "prebuilt" copies
# bin/image/ipsecca and bin/image/ipsecca-sidecar (static, CGO_ENABLED=0, built outside) from the
# context. Only the named stage runs.
ARG BINARY=compile

FROM ${BUILDER} AS compile
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=true -ldflags='-s -w' -o /out/ipsecca ./cmd/ipsecca \
 && CGO_ENABLED=0 go build -trimpath -buildvcs=true -ldflags='-s -w' -o /out/ipsecca-sidecar ./cmd/ipsecca-sidecar

FROM scratch AS prebuilt
# The label lets hack/image.sh remove this stage's image once the final image has the binary.
LABEL io.ipsecca.stage=prebuilt
COPY bin/image/ipsecca bin/image/ipsecca-sidecar /out/

FROM ${BINARY} AS binary

FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libnss3-tools ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && useradd --uid 65532 --user-group --home-dir /var/lib/ipsecca --shell /usr/sbin/nologin ipsecca \
 && install -d -o ipsecca -g ipsecca -m 0700 /var/lib/ipsecca
COPY --from=binary /out/ipsecca /out/ipsecca-sidecar /usr/local/bin/
# The CA runs unprivileged as the manifests' runAsUser (65532); the sidecar DaemonSet overrides the
# user to write the host's NSS database.
USER 65532:65532
VOLUME /var/lib/ipsecca
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/ipsecca"]
CMD ["serve", "--data-dir", "/var/lib/ipsecca", "--listen", "0.0.0.0:8443"]
