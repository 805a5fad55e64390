# Sourced by the examples' run.sh: finds or builds medgate, makes a work
# directory, starts and cleans up processes. Expects $here and $root.
# shellcheck shell=bash

# Settings from the caller's shell would change what the sidecars do.
for v in $(compgen -e); do
	case $v in MEDGATE_BIN) ;; MEDGATE_* | SPIFFE_ENDPOINT_SOCKET) unset "$v" ;; esac
done

need() { command -v "$1" >/dev/null 2>&1 || { echo "run.sh: $1 not found: $2" >&2; exit 2; }; }

medgate=${MEDGATE_BIN:-}
if [ -z "$medgate" ]; then
	if command -v go >/dev/null 2>&1; then
		echo "building bin/medgate"
		make -s -C "$root" build >/dev/null
	fi
	medgate=$root/bin/medgate
fi
[ -x "$medgate" ] || { echo "run.sh: no medgate binary at $medgate (run 'make build' or set MEDGATE_BIN)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/medgate-example.XXXXXX")
pids=()
medgate_logs=() # what medgate wrote: no PHI may appear in it
namespaces=()   # network namespaces made for the example, deleted with it
cleanup() {
	local status=$? ns
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	# Deleting a namespace deletes its end of a veth pair, and so the pair.
	for ns in "${namespaces[@]}"; do
		for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
		ip netns delete "$ns" 2>/dev/null || true
	done
	if [ "$status" -ne 0 ]; then
		echo "FAILED; logs and files kept in $work" >&2
	else
		rm -rf "$work"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAILED: $*" >&2; exit 1; }

# in_ns CMD...: runs CMD in network namespace $ns when that is set, here
# otherwise.
in_ns() {
	if [ -n "${ns:-}" ]; then
		ip netns exec "$ns" "$@"
	else
		"$@"
	fi
}

# start NAME CMD...: runs CMD in the background, in network namespace $ns
# when that is set, output in $work/NAME.log. ip netns exec execs CMD, so
# the PID in pids is CMD's.
start() {
	local name=$1
	shift
	[ -z "${ns:-}" ] || set -- ip netns exec "$ns" "$@"
	"$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
}

# wait_for NAME PATTERN: waits until NAME's log has a line matching PATTERN.
wait_for() {
	local name=$1 pattern=$2 pid=${pids[-1]}
	for _ in $(seq 200); do
		grep -q -- "$pattern" "$work/$name.log" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$work/$name.log" >&2
	fail "$name did not start"
}

# sidecar NAME VAR=VALUE...: starts a medgate sidecar and waits until it
# serves. Ports are the system's choice; see listen_addr.
sidecar() {
	local name=$1
	shift
	start "$name" env MEDGATE_LOG_FORMAT=json MEDGATE_ADMIN_ADDR=127.0.0.1:0 MEDGATE_DRAIN_TIMEOUT=2s \
		MEDGATE_EVENT_LOG="$work/$name.events.jsonl" "$@" "$medgate" sidecar
	wait_for "$name" '"msg":"sidecar started"'
	medgate_logs+=("$work/$name.log" "$work/$name.events.jsonl")
}

# listen_addr NAME inbound|outbound: the address a sidecar's route bound.
listen_addr() {
	sed -n "s/.*\"msg\":\"$2 route\".*\"listen\":\"\([^\"]*\)\".*/\1/p" "$work/$1.log" | sed -n 1p
}

# identity DIR BUNDLE...: sets ids to the settings for the SVID in DIR,
# trusting the CAs in the bundle files.
identity() {
	local dir=$1
	shift
	local IFS=,
	ids=("MEDGATE_SVID_CERT=$dir/svid.pem" "MEDGATE_SVID_KEY=$dir/svid.key" "MEDGATE_TRUST_BUNDLE=$*")
}
