#!/usr/bin/env bash
# `make test-package`: builds the Debian package and checks it as an operator meets it.
#
#  1. `cargo deb`, then the archive: both binaries, both units, the env files (mode 600, conffiles),
#     the sysctl drop-in, the sysusers file; the env files list every documented setting.
#  2. Installs it into a throw-away root (`dpkg-deb -x`) and starts both units from it: with
#     systemd when it is PID 1 (the units copied under /run/systemd/system with their paths moved
#     into that root, `systemctl reload` for SIGHUP), otherwise by running each unit's
#     ExecStartPre/ExecStart lines by hand with its Environment/EnvironmentFile and, as far as
#     this machine allows, its limits and hardening: LimitMEMLOCK/LimitNOFILE (prlimit),
#     NoNewPrivileges, an empty capability bounding set and an unprivileged user (setpriv),
#     ProtectSystem=strict, ProtectHome and PrivateTmp (a private mount namespace). A setting
#     that broke io_uring or the sockets would show as a unit that never gets ready.
#  3. Asks both /health/ready on loopback (the gateway pointed at that ringsfu), reloads the
#     gateway with one more SFU in its list and checks that it took it and still answers, stops
#     both with SIGTERM and expects a clean exit.
#
# Every wait is bounded (CHECK_PACKAGE_WAIT seconds, default 30); whatever it started is stopped
# and the root removed on every exit path. Prints PASS/FAIL lines; exits non-zero on a failure.
# CHECK_PACKAGE_DEB=<file.deb> checks that package instead of building one (e.g. on a host with
# systemd but no Rust toolchain).
set -euo pipefail
cd "$(dirname "$0")/.."

wait_seconds=${CHECK_PACKAGE_WAIT:-30}
failures=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
abort() {
	echo "FAIL $*"
	exit 1
}
note() { echo "NOTE $*"; }

is_root() { [ "$(id -u)" = 0 ]; }
with_systemd() { [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ] && [ -d /run/systemd/system ] && is_root; }

# Not under /tmp, /var/tmp or a home directory: the units' PrivateTmp/ProtectHome would hide it.
if is_root; then work=$(mktemp -d /var/lib/ringsfu-package-check.XXXXXX); else work=$(mktemp -d); fi
chmod 755 "$work"
root="$work/root"
pids=()
units=()

cleanup() {
	local pid unit i
	for unit in "${units[@]}"; do
		systemctl stop "$unit" >/dev/null 2>&1 || true
		rm -f "/run/systemd/system/$unit"
	done
	[ ${#units[@]} -eq 0 ] || systemctl daemon-reload >/dev/null 2>&1 || true
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do
		for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. The archive ---------------------------------------------------------------------------

deb=${CHECK_PACKAGE_DEB:-}
if [ -z "$deb" ]; then
	command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
	echo "building the package (both binaries, then cargo deb --no-build --fast)"
	# cargo-deb builds only the root package's binary; sfu-gateway is another crate's.
	cargo build --release --bin ringsfu --bin sfu-gateway 2>"$work/cargo-build.err" || {
		tail -30 "$work/cargo-build.err"
		abort "cargo build"
	}
	cargo deb --no-build --fast >"$work/cargo-deb.out" 2>"$work/cargo-deb.err" || {
		tail -30 "$work/cargo-deb.err"
		abort "cargo deb"
	}
	deb=$(grep '\.deb$' "$work/cargo-deb.out" | tail -1)
	[ -f "$deb" ] || abort "cargo deb printed no .deb path"
	pass "built $deb"
fi
[ -f "$deb" ] || abort "no package at $deb"

contents=$(dpkg-deb -c "$deb")
expect_entry() { # mode, path inside the package
	if awk -v path="./$2" -v mode="$1" '$6 == path && $1 == mode { found = 1 } END { exit !found }' <<<"$contents"; then
		pass "package holds /$2 ($1)"
	else
		fail "package lacks /$2 with mode $1"
	fi
}
expect_entry -rwxr-xr-x usr/bin/ringsfu
expect_entry -rwxr-xr-x usr/bin/sfu-gateway
expect_entry -rwxr-xr-x usr/lib/ringsfu/check-env
expect_entry -rw-r--r-- usr/lib/systemd/system/ringsfu.service
expect_entry -rw-r--r-- usr/lib/systemd/system/sfu-gateway.service
expect_entry -rw------- etc/ringsfu/ringsfu.env
expect_entry -rw------- etc/ringsfu/sfu-gateway.env
expect_entry -rw-r--r-- etc/sysctl.d/60-ringsfu.conf
expect_entry -rw-r--r-- usr/lib/sysusers.d/ringsfu.conf

conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
for f in /etc/ringsfu/ringsfu.env /etc/ringsfu/sfu-gateway.env /etc/sysctl.d/60-ringsfu.conf; do
	if grep -qx "$f" <<<"$conffiles"; then pass "$f is a conffile"; else fail "$f is not a conffile"; fi
done
postinst=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst)
if grep -q 'systemd-sysusers.*ringsfu.conf' <<<"$postinst" && dpkg-deb -f "$deb" Depends | grep -qw systemd; then
	pass "postinst creates the service users (systemd-sysusers; Depends: systemd)"
else
	fail "postinst does not create the service users"
fi

dpkg-deb -x "$deb" "$root"
if command -v readelf >/dev/null; then
	if readelf -W -S "$root/usr/bin/ringsfu" | grep -Eq '\.debug_(info|line) '; then
		fail "/usr/bin/ringsfu carries debug sections (expected in the -dbgsym package)"
	else
		pass "binaries are stripped"
	fi
fi

# Every setting of a documentation table (first column, `NAME`) appears commented in an env file.
documented() { # markdown file, heading line
	awk -v heading="$2" '$0 == heading { on = 1; next } /^#/ { on = 0 } on && /^\| `/' "$1" |
		cut -d'|' -f2 | grep -o '`[A-Z][A-Z0-9_]*`' | tr -d '`'
}
expect_settings() { # env file, markdown file, heading line
	local missing="" name
	for name in $(documented "$2" "$3"); do grep -q "^#$name=" "$1" || missing="$missing $name"; done
	if [ -z "$(documented "$2" "$3")" ]; then
		fail "no settings found under '$3' in $2"
	elif [ -n "$missing" ]; then
		fail "$(basename "$1") lacks documented settings:$missing"
	else
		pass "$(basename "$1") lists every setting of $2 ('$3'), commented"
	fi
}
expect_settings "$root/etc/ringsfu/ringsfu.env" README.md "## Configuration"
expect_settings "$root/etc/ringsfu/sfu-gateway.env" docs/gateway.md "### Environment and flags"

# --- 2. The units ----------------------------------------------------------------------------

# The values of one key in a unit's [Service] section, one per line.
unit_values() { # unit file, key
	awk -v key="$2" '/^\[/ { on = ($0 == "[Service]") } on && index($0, key "=") == 1 { print substr($0, length(key) + 2) }' "$1"
}
ringsfu_unit="$root/usr/lib/systemd/system/ringsfu.service"
gateway_unit="$root/usr/lib/systemd/system/sfu-gateway.service"
for unit in "$ringsfu_unit" "$gateway_unit"; do
	missing=""
	# KEY=value: that value exactly (CapabilityBoundingSet= is the empty set); KEY=*: any value.
	for setting in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes CapabilityBoundingSet= 'LimitNOFILE=*'; do
		want=${setting#*=}
		[ "$want" = "*" ] && want=".+"
		unit_values "$unit" "${setting%%=*}" | grep -Eqx "$want" || missing="$missing $setting"
	done
	if [ -z "$missing" ]; then pass "$(basename "$unit") sets its limits and hardening"; else fail "$(basename "$unit") lacks:$missing"; fi
done
if unit_values "$ringsfu_unit" LimitMEMLOCK | grep -q .; then pass "ringsfu.service sets LimitMEMLOCK"; else fail "ringsfu.service lacks LimitMEMLOCK"; fi
if unit_values "$gateway_unit" ExecReload | grep -qx '/bin/kill -HUP \$MAINPID'; then
	pass "sfu-gateway.service reloads with SIGHUP"
else
	fail "sfu-gateway.service has no ExecReload sending SIGHUP"
fi

# The package's absolute paths, moved into the throw-away root (the view the services get of it).
relocate() { # view directory; reads a unit or env file on stdin
	sed -e "s#/usr/bin/ringsfu#$1/usr/bin/ringsfu#g" -e "s#/usr/bin/sfu-gateway#$1/usr/bin/sfu-gateway#g" \
		-e "s#/usr/lib/ringsfu/#$1/usr/lib/ringsfu/#g" -e "s#/etc/ringsfu/#$1/etc/ringsfu/#g"
}

# Like an operator: settings appended to the packaged env files, which stay as shipped above them.
key=$(head -c 32 /dev/urandom | base64)
gateway_key=$(head -c 32 /dev/urandom | base64)
cp "$root/etc/ringsfu/ringsfu.env" "$work/ringsfu.env.shipped"
cat >>"$root/etc/ringsfu/ringsfu.env" <<EOF

# Added by scripts/check-package.sh: loopback, any free ports, one shard, a short drain.
AUTH_KEY=$key
PUBLIC_IP=127.0.0.1
HTTP_INTERFACE=127.0.0.1
RTC_INTERFACE=127.0.0.1
PORT=0
RTC_MIN_PORT=0
NUM_WORKERS=1
PIN_SHARDS=false
DRAIN_GRACE_SECONDS=1
EOF
cat >>"$root/etc/ringsfu/sfu-gateway.env" <<EOF

# Added by scripts/check-package.sh.
SFU_GATEWAY_KEY=$gateway_key
SFU_GATEWAY_BIND=127.0.0.1
SFU_GATEWAY_PORT=0
EOF

write_secrets() { # ringsfu's http address, extra SFU address (optional)
	{
		printf '[health]\ninterval_seconds = 0.5\n\n[[sfu]]\naddress = "http://%s"\nregion = "eu-west"\nkey = "%s"\n' "$1" "$key"
		[ -z "${2:-}" ] || printf '\n[[sfu]]\naddress = "http://%s"\nregion = "us-east"\nkey = "%s"\n' "$2" "$key"
	} >"$root/etc/ringsfu/sfu-gateway.toml.new"
	chmod 600 "$root/etc/ringsfu/sfu-gateway.toml.new"
	chown "$gateway_owner" "$root/etc/ringsfu/sfu-gateway.toml.new"
	mv "$root/etc/ringsfu/sfu-gateway.toml.new" "$root/etc/ringsfu/sfu-gateway.toml"
}

ready_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$1/health/ready" || true; }
wait_ready() { # name, address
	local deadline=$((SECONDS + wait_seconds))
	while [ "$(ready_status "$2")" != 200 ]; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.2
	done
}
node_count() { curl -s -m 2 "http://$1/v1/health" | grep -o '"address"' | wc -l; }

# --- 3a. By hand: ExecStart under the unit's environment, limits and hardening ------------------

service_uid=65534 # nobody: the unit's own user exists only once the package is installed

# The unit's environment as systemd builds it: Environment=, then EnvironmentFile= (which wins).
unit_environment() { # relocated unit file
	echo "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	unit_values "$1" Environment | tr ' ' '\n'
	local file
	for file in $(unit_values "$1" EnvironmentFile); do
		grep -Ev '^[[:space:]]*([#;]|$)' "${file#-}"
	done
}

# A systemd limit as this shell can apply it: at most its own hard limit without CAP_SYS_RESOURCE.
applicable_limit() { # unit value, hard limit of this shell (same unit)
	local want=$1 hard=$2
	[ "$want" = infinity ] && want=unlimited
	if [ "$hard" = unlimited ] || { [ "$want" != unlimited ] && [ "$want" -le "$hard" ]; }; then echo "$want"; else echo "$hard"; fi
}

# Runs "$@" as the unit would: private mounts (strict read-only system, empty /tmp, no homes),
# the unit's limits, an unprivileged user with no capabilities and no new privileges.
sandbox_script='
set -e
mount --make-rprivate /
findmnt -rno TARGET | sort -u | while read -r m; do
	case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
	mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs "$d"; done
for d in /home /root /run/user; do [ ! -d "$d" ] || mount -t tmpfs -o ro,mode=755 tmpfs "$d"; done
exec "$@"
'
confined=false
if is_root && unshare --mount true 2>/dev/null && command -v setpriv >/dev/null && command -v prlimit >/dev/null; then
	confined=true
fi

# Replaces the calling (sub)shell, so that a background job's $! is the service itself.
run_by_hand() { # relocated unit, command line...
	local unit=$1
	shift
	local memlock nofile environment=()
	mapfile -t environment < <(unit_environment "$unit")
	if ! $confined; then
		exec env -i "${environment[@]}" "$@"
	fi
	memlock=$(unit_values "$unit" LimitMEMLOCK)
	nofile=$(unit_values "$unit" LimitNOFILE)
	local limits=()
	[ -z "$memlock" ] || limits+=("--memlock=$(applicable_limit "$memlock" "$(prlimit --memlock -o HARD --noheadings | tr -d ' ')")")
	[ -z "$nofile" ] || limits+=("--nofile=$(applicable_limit "$nofile" "$(prlimit --nofile -o HARD --noheadings | tr -d ' ')")")
	exec unshare --mount bash -c "$sandbox_script" sandbox \
		prlimit "${limits[@]}" -- \
		setpriv --reuid="$service_uid" --regid="$service_uid" --clear-groups --no-new-privs \
		--bounding-set=-all --inh-caps=-all -- \
		env -i "${environment[@]}" "$@"
}

# The first line of a process's output starting with a prefix, waited for.
ready_line() { # output file, prefix, pid
	local deadline=$((SECONDS + wait_seconds)) line
	while [ $SECONDS -lt $deadline ]; do
		line=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
		[ -z "$line" ] || { echo "$line"; return 0; }
		kill -0 "$3" 2>/dev/null || return 1
		sleep 0.2
	done
	return 1
}

stop_process() { # name, pid
	local status=0 i
	kill -TERM "$2" 2>/dev/null || true
	for ((i = 0; i < wait_seconds * 10; i++)); do kill -0 "$2" 2>/dev/null || break; sleep 0.1; done
	wait "$2" || status=$?
	if [ "$status" = 0 ]; then pass "$1 stopped on SIGTERM (exit 0)"; else fail "$1 exited $status after SIGTERM"; fi
}

# What the kernel says about a running service: user, no_new_privs, bounding set, limits.
confinement() { # pid
	local uid nnp bnd
	uid=$(awk '/^Uid:/ { print $2 }' "/proc/$1/status")
	nnp=$(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$1/status")
	bnd=$(awk '/^CapBnd:/ { print $2 }' "/proc/$1/status")
	echo "uid $uid, NoNewPrivs $nnp, CapBnd $bnd, memlock $(awk '/Max locked memory/ { print $4 }' "/proc/$1/limits"), nofile $(awk '/Max open files/ { print $4 }' "/proc/$1/limits")"
	[ "$uid" != 0 ] && [ "$nnp" = 1 ] && [ "$bnd" = 0000000000000000 ]
}

check_by_hand() {
	local view=$root
	gateway_owner="$service_uid:$service_uid"
	if $confined; then
		note "no systemd as PID 1: running the units' commands by hand as uid $service_uid, NoNewPrivileges, empty bounding set, read-only system, private /tmp, hidden homes"
	else
		note "no systemd and no root: running the units' commands by hand as $(id -un), without the hardening"
		gateway_owner="$(id -u):$(id -g)"
	fi
	relocate "$view" <"$ringsfu_unit" >"$work/ringsfu.service"
	relocate "$view" <"$gateway_unit" >"$work/sfu-gateway.service"

	# The package as shipped (no AUTH_KEY) must refuse to start, not run a development setup.
	local pre
	pre=$(unit_values "$work/ringsfu.service" ExecStartPre)
	sed "s#^EnvironmentFile=.*#EnvironmentFile=$work/ringsfu.env.shipped#" "$work/ringsfu.service" >"$work/ringsfu-shipped.service"
	if (run_by_hand "$work/ringsfu-shipped.service" $pre) 2>"$work/pre.err"; then
		fail "ExecStartPre accepted the shipped ringsfu.env (no AUTH_KEY)"
	elif grep -q AUTH_KEY "$work/pre.err"; then
		pass "unconfigured ringsfu.service refuses to start: $(head -c 100 "$work/pre.err")..."
	else
		fail "ExecStartPre refused without naming AUTH_KEY: $(cat "$work/pre.err")"
	fi
	if (run_by_hand "$work/ringsfu.service" $pre) 2>"$work/pre.err"; then
		pass "configured ringsfu.service passes ExecStartPre"
	else
		fail "ExecStartPre refused the configured ringsfu.env: $(cat "$work/pre.err")"
	fi

	local ringsfu_pid gateway_pid http gateway line
	# shellcheck disable=SC2046 # ExecStart is a command line: split it as systemd does.
	run_by_hand "$work/ringsfu.service" $(unit_values "$work/ringsfu.service" ExecStart) >"$work/ringsfu.out" 2>"$work/ringsfu.err" &
	ringsfu_pid=$!
	pids+=("$ringsfu_pid")
	line=$(ready_line "$work/ringsfu.out" "ringsfu ready " "$ringsfu_pid") || {
		tail -5 "$work/ringsfu.err"
		abort "ringsfu (ExecStart of ringsfu.service) printed no ready line"
	}
	http=$(sed -n 's/^ringsfu ready http=\([^ ]*\).*/\1/p' <<<"$line")
	if wait_ready ringsfu "$http"; then pass "ringsfu.service's ExecStart answers /health/ready on $http"; else fail "ringsfu on $http never got ready"; fi
	if $confined; then
		if line=$(confinement "$ringsfu_pid"); then pass "ringsfu runs confined: $line"; else fail "ringsfu is not confined: $line"; fi
	fi

	write_secrets "$http"
	# shellcheck disable=SC2046
	run_by_hand "$work/sfu-gateway.service" $(unit_values "$work/sfu-gateway.service" ExecStart) >"$work/gateway.out" 2>"$work/gateway.err" &
	gateway_pid=$!
	pids+=("$gateway_pid")
	line=$(ready_line "$work/gateway.out" "sfu-gateway ready " "$gateway_pid") || {
		tail -5 "$work/gateway.err"
		abort "sfu-gateway (ExecStart of sfu-gateway.service) printed no ready line"
	}
	gateway=$(sed -n 's/^sfu-gateway ready http=\([^ ]*\).*/\1/p' <<<"$line")
	if wait_ready sfu-gateway "$gateway"; then pass "sfu-gateway.service's ExecStart answers /health/ready on $gateway (its SFU is healthy)"; else fail "sfu-gateway on $gateway never got ready"; fi
	if grep -q "readable by group or others" "$work/gateway.err"; then fail "sfu-gateway warns about its secrets file's mode"; fi
	if $confined; then
		if line=$(confinement "$gateway_pid"); then pass "sfu-gateway runs confined: $line"; else fail "sfu-gateway is not confined: $line"; fi
	fi

	# ExecReload: SIGHUP with a second SFU in the list; the gateway must take it and keep serving.
	write_secrets "$http" "127.0.0.1:9"
	kill -HUP "$gateway_pid"
	check_reload "$gateway"

	stop_process sfu-gateway "$gateway_pid"
	stop_process ringsfu "$ringsfu_pid"
}

check_reload() { # gateway address
	local deadline=$((SECONDS + wait_seconds))
	while [ "$(node_count "$1")" != 2 ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
	if [ "$(node_count "$1")" = 2 ]; then pass "SIGHUP reloaded the gateway's SFU list (2 SFUs)"; else fail "the gateway did not take the reloaded SFU list"; fi
	if [ "$(ready_status "$1")" = 200 ]; then pass "sfu-gateway still ready after the reload"; else fail "sfu-gateway not ready after the reload"; fi
}

# --- 3b. With systemd: the units themselves, their paths moved into the root -------------------

# What this start of a unit printed (not an earlier run's lines).
unit_output() { # unit
	journalctl -o cat --no-pager _SYSTEMD_INVOCATION_ID="$(systemctl show -p InvocationID --value "$1")"
}

check_with_systemd() {
	note "systemd is PID 1: starting the units with systemctl (as ringsfu-check.service and sfu-gateway-check.service)"
	# The package's users, as its postinst would create them.
	systemd-sysusers "$root/usr/lib/sysusers.d/ringsfu.conf"
	gateway_owner=sfu-gateway:sfu-gateway
	relocate "$root" <"$ringsfu_unit" >/run/systemd/system/ringsfu-check.service
	units+=(ringsfu-check.service)
	relocate "$root" <"$gateway_unit" >/run/systemd/system/sfu-gateway-check.service
	units+=(sfu-gateway-check.service)
	systemctl daemon-reload

	local http gateway line deadline
	systemctl start ringsfu-check.service || abort "systemctl start ringsfu-check.service"
	deadline=$((SECONDS + wait_seconds))
	until line=$(unit_output ringsfu-check.service | grep -m1 '^ringsfu ready '); do
		[ $SECONDS -lt $deadline ] || { systemctl status --no-pager ringsfu-check.service | tail -5; abort "ringsfu.service never printed its ready line"; }
		sleep 0.2
	done
	http=$(sed -n 's/^ringsfu ready http=\([^ ]*\).*/\1/p' <<<"$line")
	if wait_ready ringsfu "$http"; then pass "ringsfu.service (systemd) answers /health/ready on $http"; else fail "ringsfu.service on $http never got ready"; fi
	if line=$(confinement "$(systemctl show -p MainPID --value ringsfu-check.service)"); then pass "ringsfu runs confined: $line"; else fail "ringsfu is not confined: $line"; fi

	write_secrets "$http"
	systemctl start sfu-gateway-check.service || abort "systemctl start sfu-gateway-check.service"
	deadline=$((SECONDS + wait_seconds))
	until line=$(unit_output sfu-gateway-check.service | grep -m1 '^sfu-gateway ready '); do
		[ $SECONDS -lt $deadline ] || { systemctl status --no-pager sfu-gateway-check.service | tail -5; abort "sfu-gateway.service never printed its ready line"; }
		sleep 0.2
	done
	gateway=$(sed -n 's/^sfu-gateway ready http=\([^ ]*\).*/\1/p' <<<"$line")
	if wait_ready sfu-gateway "$gateway"; then pass "sfu-gateway.service (systemd) answers /health/ready on $gateway"; else fail "sfu-gateway.service on $gateway never got ready"; fi
	if line=$(confinement "$(systemctl show -p MainPID --value sfu-gateway-check.service)"); then pass "sfu-gateway runs confined: $line"; else fail "sfu-gateway is not confined: $line"; fi

	write_secrets "$http" "127.0.0.1:9"
	systemctl reload sfu-gateway-check.service || fail "systemctl reload sfu-gateway-check.service"
	check_reload "$gateway"

	local unit result
	for unit in sfu-gateway-check.service ringsfu-check.service; do
		systemctl stop "$unit"
		result=$(systemctl show -p ExecMainStatus --value "$unit")
		if [ "$result" = 0 ]; then pass "$unit stopped cleanly (exit 0)"; else fail "$unit exited $result on stop"; fi
	done
}

if with_systemd; then check_with_systemd; else check_by_hand; fi

if [ "$failures" -eq 0 ]; then
	echo "check-package: all checks passed"
else
	echo "check-package: $failures check(s) failed"
	exit 1
fi
