#!/usr/bin/env bash
# Installs what `make test` needs beyond Rust, idempotently: Debian's chromium for the browser
# tests, Node.js if absent, the npm packages of tests/browser (from package-lock.json), and
# promtool (Debian's prometheus package) for tests/monitoring.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test-deps: installing ${missing[*]} (Debian packages)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Only promtool is wanted from prometheus: don't leave the server its package may have started.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# tests/gateway_ha.rs starts its own redis-server on a free loopback port: only the binary is
# wanted, so a system service the package may have started is stopped and disabled.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "test-deps: installing redis-server (Debian package)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    if command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
fi

# tests/browser_network.rs runs each call in a network namespace of its own (`ip`), drops UDP
# there with nftables (`nft`) and relays through its own coturn (`turnserver`) on loopback: only
# the binary is wanted, so a system service the package may have started is stopped and disabled.
netns_missing=()
command -v ip >/dev/null 2>&1 || netns_missing+=(iproute2)
command -v nft >/dev/null 2>&1 || netns_missing+=(nftables)
command -v turnserver >/dev/null 2>&1 || netns_missing+=(coturn)
if [ ${#netns_missing[@]} -gt 0 ]; then
    echo "test-deps: installing ${netns_missing[*]} (Debian packages)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${netns_missing[@]}" >/dev/null
    if [[ " ${netns_missing[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null 2>&1; then
        as_root systemctl disable --now coturn >/dev/null 2>&1 || true
    fi
fi

if [ ! -d tests/browser/node_modules/mediasoup-client ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
    echo "test-deps: npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# The test-call page's build (tests/demo_page.rs rebuilds it and compares with the committed one).
if [ ! -d demo/node_modules/esbuild ] || [ demo/package-lock.json -nt demo/node_modules ]; then
    echo "test-deps: npm ci in demo"
    (cd demo && npm ci --no-audit --no-fund --loglevel=error)
fi
