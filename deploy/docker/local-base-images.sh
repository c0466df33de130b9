#!/usr/bin/env bash
# Builds the two base images the Dockerfile starts from when Docker Hub cannot be reached:
# a Debian bookworm runtime image (debootstrap from Debian's apt mirror, `docker import`) and a
# builder image holding this machine's own Rust toolchain on the same Debian base, laid out as
# the official rust image is (/usr/local/cargo/bin on PATH). Images already present are kept.
#
#   deploy/docker/local-base-images.sh RUNTIME_TAG BUILDER_TAG
set -euo pipefail

runtime_tag=${1:?runtime image tag}
builder_tag=${2:?builder image tag}
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

have_image() { "$docker" image inspect "$1" >/dev/null 2>&1; }

command -v debootstrap >/dev/null || {
	echo "local-base-images: installing debootstrap"
	apt-get install -y debootstrap >/dev/null
}

work=$(mktemp -d /var/tmp/ringsfu-base.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A root file system from Debian's mirror, trimmed of docs and apt lists, imported as an image.
import_root() { # tag, extra packages (comma-separated, may be empty), optional setup function
	local tag=$1 include=$2 setup=${3:-}
	local root="$work/root"
	rm -rf "$root"
	echo "local-base-images: debootstrap $suite ($include) for $tag"
	debootstrap --variant=minbase ${include:+--include="$include"} "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log"; exit 1; }
	rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
		"$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
	[ -z "$setup" ] || "$setup" "$root"
	tar -C "$root" -c . | "$docker" import \
		--change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' - "$tag" >/dev/null
	rm -rf "$root"
	echo "local-base-images: $tag imported"
}

# The machine's Rust toolchain (rustc, cargo and the x86_64 standard library), no docs.
add_toolchain() {
	local root=$1 sysroot
	sysroot=$(rustc --print sysroot)
	mkdir -p "$root/usr/local/rust/bin" "$root/usr/local/cargo/bin"
	cp -a "$sysroot/bin/cargo" "$sysroot/bin/rustc" "$sysroot/bin/rustdoc" "$root/usr/local/rust/bin/"
	cp -a "$sysroot/lib" "$root/usr/local/rust/"
	for tool in cargo rustc rustdoc; do ln -s "../../rust/bin/$tool" "$root/usr/local/cargo/bin/$tool"; done
	# The certificate authorities added on this machine (a TLS-inspecting proxy's, say), so that
	# cargo in the builder reaches crates.io as it does here.
	if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
		cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
		chroot "$root" update-ca-certificates >/dev/null 2>&1
	fi
}

have_image "$runtime_tag" || import_root "$runtime_tag" ""
have_image "$builder_tag" || import_root "$builder_tag" "ca-certificates,gcc,g++,libc6-dev,make" add_toolchain
