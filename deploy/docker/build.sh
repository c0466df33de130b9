#!/usr/bin/env bash
# `make docker`: builds deploy/docker/Dockerfile into $IMAGE (default ringsfu:latest).
# Base images come from Docker Hub when it answers; otherwise local-base-images.sh builds them
# from Debian's apt mirror (and this machine's Rust toolchain) and the build uses those.
# The build context is the repository's tracked and unignored files only, so target/ never
# travels to the daemon.
set -euo pipefail
cd "$(dirname "$0")/../.."

docker=${DOCKER:-docker}
image=${IMAGE:-ringsfu:latest}
rust_image=${RUST_IMAGE:-rust:1.95-slim-bookworm}
runtime_image=${RUNTIME_IMAGE:-debian:bookworm-slim}

have() { "$docker" image inspect "$1" >/dev/null 2>&1; }
available() { have "$1" || timeout 120 "$docker" pull -q "$1" >/dev/null 2>&1; }

"$docker" version --format '{{.Server.Version}}' >/dev/null 2>&1 || {
	echo "docker: no Docker engine answers (start dockerd, or apt-get install docker.io)" >&2
	exit 1
}

if available "$rust_image" && available "$runtime_image"; then
	echo "docker: base images $rust_image and $runtime_image"
else
	rust_version=$(rustc --version | awk '{print $2}')
	rust_image=ringsfu-local/rust:$rust_version-bookworm
	runtime_image=ringsfu-local/debian:bookworm-slim
	echo "docker: Docker Hub cannot be reached; local base images $rust_image and $runtime_image"
	DOCKER=$docker deploy/docker/local-base-images.sh "$runtime_image" "$rust_image"
fi

# Host networking for the build: cargo fetches crates from crates.io.
git ls-files -z --cached --others --exclude-standard |
	tar --null --files-from=- --ignore-failed-read -c |
	"$docker" build --network host -f deploy/docker/Dockerfile \
		--build-arg RUST_IMAGE="$rust_image" --build-arg RUNTIME_IMAGE="$runtime_image" -t "$image" -
echo "docker: built $image ($("$docker" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
