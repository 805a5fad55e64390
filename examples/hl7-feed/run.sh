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

# Binary, work directory, processes: shared by the examples.
# shellcheck source=../lib.sh
. "$here/../lib.sh"

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
