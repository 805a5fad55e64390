#!/usr/bin/env bash
# An ADT^A01 feed from a US hospital's interface engine to a reading
# partner in India, through two medgate sidecars, on this machine's
# loopback. See README.md.
#
# Needs: mllp_send and python3-hl7 (apt-get install python3-hl7), and Go to
# build medgate unless MEDGATE_BIN names a binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

# --- common to the examples: binary, work directory, processes ----------

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
cleanup() {
	local status=$?
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
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

# start NAME CMD...: runs CMD in the background, output in $work/NAME.log.
start() {
	local name=$1
	shift
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

# --- this example ------------------------------------------------------

need mllp_send "apt-get install python3-hl7"
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import hl7.mllp' 2>/dev/null ||
	{ echo "run.sh: python3-hl7 not importable by /usr/bin/python3: apt-get install python3-hl7" >&2; exit 2; }

echo "== Two organisations, each with its own CA (SPIRE would issue these)"
"$medgate" dev-ca init --dir "$work/ca-mercy" --trust-domain mercy.example.org >/dev/null
"$medgate" dev-ca init --dir "$work/ca-reading" --trust-domain reading.example.in >/dev/null
"$medgate" dev-ca issue --dir "$work/ca-mercy" --spiffe-id spiffe://mercy.example.org/interface-engine --out "$work/engine" >/dev/null
"$medgate" dev-ca issue --dir "$work/ca-reading" --spiffe-id spiffe://reading.example.in/hl7-receiver --out "$work/receiver" >/dev/null
bundles=("$work/engine/bundle.pem" "$work/receiver/bundle.pem")
# The data owner's keyring: both ends seal the data inside TLS under it.
"$medgate" keys init --keyring "$work/keys/keyring.json" >/dev/null
echo "   spiffe://mercy.example.org/interface-engine (US), spiffe://reading.example.in/hl7-receiver (IN)"

echo "== The reading partner's HL7 receiver and its inbound sidecar (IN)"
mkdir -p "$work/inbox"
start receiver /usr/bin/python3 "$here/receiver.py" "$work/inbox"
wait_for receiver '^LISTENING '
receiver_port=$(sed -n 's/^LISTENING //p' "$work/receiver.log")
identity "$work/receiver" "${bundles[@]}"
sidecar reading "${ids[@]}" \
	MEDGATE_KEYRING="$work/keys/keyring.json" \
	MEDGATE_INBOUND_LISTEN=127.0.0.1:0 MEDGATE_INBOUND_UPSTREAM="127.0.0.1:$receiver_port" \
	MEDGATE_INBOUND_PROTOCOL=hl7 MEDGATE_INBOUND_ALLOW=spiffe://mercy.example.org/interface-engine
reading_in=$(listen_addr reading inbound)
echo "   receiver on 127.0.0.1:$receiver_port, sidecar tunnel port $reading_in"

echo "== Mercy's outbound sidecar (US), with policy.yaml"
identity "$work/engine" "${bundles[@]}"
sidecar mercy "${ids[@]}" \
	MEDGATE_KEYRING="$work/keys/keyring.json" MEDGATE_POLICY_FILE="$here/policy.yaml" \
	MEDGATE_OUTBOUND_LISTEN=127.0.0.1:0 MEDGATE_OUTBOUND_PEER="$reading_in" \
	MEDGATE_OUTBOUND_PEER_ID=spiffe://reading.example.in/hl7-receiver MEDGATE_OUTBOUND_PROTOCOL=hl7
mercy_out=$(listen_addr mercy outbound)
echo "   the interface engine sends to $mercy_out, plain MLLP on loopback"

echo "== mllp_send sends adt_a01.hl7 to the sidecar; the receiver's ACK comes back"
ack=$(mllp_send --loose -f "$here/adt_a01.hl7" -p "${mercy_out##*:}" 127.0.0.1) || fail "mllp_send: $ack"
echo "$ack" | tr '\r' '\n' | tr -d '\013\034' | sed '/^[[:space:]]*$/d; s/^/   ack: /'
grep -q 'MSA|AA|MERCY-0001' <<<"$ack" || fail "no application accept for MERCY-0001 came back"

for _ in $(seq 50); do [ -e "$work/inbox/received-1.hl7" ] && break; sleep 0.1; done
[ -e "$work/inbox/received-1.hl7" ] || fail "the receiver got nothing"
received=$work/inbox/received-1.hl7

echo
echo "== Each segment as Mercy sent it (US) and as the reading partner received it (IN):"
while IFS= read -r line; do
	seg=${line%%|*}
	got=$(grep -m 1 "^$seg|" "$received" || echo "(segment removed)")
	printf '   US %s\n   IN %s\n\n' "$line" "$got"
done <"$here/adt_a01.hl7"

status=0
for phi in Marchetti Zebulon MRN-204518 123-45-6789 19341102 "Harbor View" 555-0199 z.marchetti HIBBARD ETRE NURSE ACCT-88120; do
	if grep -q -- "$phi" "$received"; then
		echo "PHI crossed the border: $phi" >&2
		status=1
	fi
done
grep -q '^NK1' "$received" && { echo "the next of kin segment crossed" >&2; status=1; }
grep -q 'ADT^A01' "$received" && grep -q 'I21.4^Non-ST elevation myocardial infarction' "$received" ||
	{ echo "the message lost its clinical content" >&2; status=1; }
[ "$status" -eq 0 ] || fail "the message was not masked as policy.yaml says"

echo "== Mercy's sidecar recorded the transfer (access events, no PHI):"
grep -m 1 '"kind":"object"' "$work/mercy.events.jsonl" | sed 's/^/   /'
grep -qs -e Marchetti -e MRN-204518 "${medgate_logs[@]}" && fail "PHI in a sidecar's log or events"

echo
echo "OK: the ADT^A01 crossed de-identified per adt-to-reading-partner; the receiver's ACK reached mllp_send."
