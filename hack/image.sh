#!/bin/bash
# Build the ipsecca container image with podman, without any registry of container images
# (`make image` runs this; IMAGE, BASE_IMAGE, MIRROR and GO may be overridden from the environment).
#
# 1. The base localhost/debian:bookworm-slim is made once by debootstrap (minbase) from the apt mirror
#    and `podman import`-ed, trimmed like Docker's bookworm-slim (no docs, man pages or locales). The
#    rootfs tarball and debootstrap's .debs are kept in .cache/image, so a wiped podman store re-imports
#    in seconds instead of debootstrapping again.
# 2. The binaries are built here, outside the image (static, -trimpath, VCS-stamped so `ipsecca version`
#    names the revision), into bin/image/ipsecca and bin/image/ipsecca-sidecar (the node agent alone),
#    and the Dockerfile's prebuilt stage copies them in.
# 3. podman builds the Dockerfile FROM that base; the runtime stage installs libnss3-tools from the
#    Debian mirror (the build runs on the host network).
#
# Traps of this host (see shared/reference/container-image.sh): crun refuses its cgroups (hybrid mode),
# so podman runs with runc; podman's default ulimits exceed the sandbox's hard limits (setrlimit EPERM),
# so every build and run passes lower ones. With runc, `podman build` needs no --isolation chroot.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/ipsecca:dev}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian:bookworm-slim}
GO=${GO:-go}
CACHE=$PWD/.cache/image
PODMAN=(podman --runtime runc)
ULIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=1000:1000)

for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || { echo "FATAL: $tool is missing: run 'make deps'" >&2; exit 1; }
done

# The Debian mirror apt uses here (deb822 URIs or a one-line "deb" source), not the security archive.
mirror() {
    [ -n "${MIRROR:-}" ] && { echo "$MIRROR"; return; }
    local m
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' |
        tr ' ' '\n' | grep -E '/debian/?$' | head -1 || true)
    [ -n "$m" ] || m=$(grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

base() {
    "${PODMAN[@]}" image exists "$BASE_IMAGE" && return
    local tar=$CACHE/debian-bookworm-slim.tar
    if [ ! -s "$tar" ]; then
        local root=$CACHE/rootfs m
        m=$(mirror)
        echo "image: debootstrap bookworm (minbase) from $m" >&2
        rm -rf "$root"
        mkdir -p "$CACHE/debs"
        debootstrap --variant=minbase --cache-dir="$CACHE/debs" bookworm "$root" "$m" >"$CACHE/debootstrap.log" 2>&1 ||
            { tail -20 "$CACHE/debootstrap.log" >&2; echo "FATAL: debootstrap failed" >&2; exit 1; }
        # Slim like Docker's debian:*-slim: keep dpkg from installing docs, man pages and locales later,
        # and drop those already there (copyright files stay).
        cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
        find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
        rm -rf "$root"/usr/share/{man,groff,info,locale,lintian,linda}/* "$root"/var/cache/apt/*.bin \
            "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
        tar --numeric-owner -C "$root" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
        rm -rf "$root"
    fi
    echo "image: importing $BASE_IMAGE" >&2
    "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$tar" "$BASE_IMAGE" >/dev/null
}

base
mkdir -p bin/image
# -buildvcs=true overrides a GOFLAGS=-buildvcs=false in the environment (this machine sets it), and
# fails rather than ship a binary that cannot say which revision it is.
for cmd in ipsecca ipsecca-sidecar; do
    CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=true -ldflags='-s -w' -o "bin/image/$cmd" "./cmd/$cmd"
done
old=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
"${PODMAN[@]}" build "${ULIMITS[@]}" --network host --layers \
    --build-arg BASE="$BASE_IMAGE" --build-arg BINARY=prebuilt \
    -t "$IMAGE" -f Dockerfile .
# The image this build replaced, now untagged: drop it unless something still uses it.
new=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")
[ -z "$old" ] || [ "$old" = "$new" ] || "${PODMAN[@]}" rmi "$old" >/dev/null 2>&1 || true
# The prebuilt stage's image only carried the binaries (tens of MB each build): drop those left untagged.
for id in $("${PODMAN[@]}" images -q --filter dangling=true --filter label=io.ipsecca.stage=prebuilt); do
    "${PODMAN[@]}" rmi "$id" >/dev/null 2>&1 || true
done
"${PODMAN[@]}" image inspect --format "image: {{.RepoTags}} {{.Size}} bytes, user {{.Config.User}}" "$IMAGE"
