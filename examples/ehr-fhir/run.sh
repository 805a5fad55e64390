#!/usr/bin/env bash
# Klinikum Nord's FHIR server in Germany behind an inbound medgate sidecar;
# a ward in the same hospital and a research partner in the US read the same
# records through their own outbound sidecars, on this machine's loopback.
# See README.md.
#
# Needs: node and curl, the FHIR server's npm packages (npm ci in
# proxy/httpx/testdata/node; done here when missing), and Go to build
# medgate unless MEDGATE_BIN names a binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

# Binary, work directory, processes: shared by the examples.
# shellcheck source=../lib.sh
. "$here/../lib.sh"

# --- this example ------------------------------------------------------

need node "apt-get install nodejs npm"
need curl "apt-get install curl"
fhir=$root/proxy/httpx/testdata/node
if [ ! -d "$fhir/node_modules/@medplum/fhir-router" ]; then
	need npm "apt-get install npm"
	echo "installing the FHIR server's npm packages (once, pinned by package-lock.json)"
	(cd "$fhir" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "== Klinikum Nord's FHIR server (Medplum's FHIR router, in memory)"
start fhir node "$fhir/server.js"
wait_for fhir '^LISTENING '
server=127.0.0.1:$(sed -n 's/^LISTENING //p' "$work/fhir.log")
# Records made inside the hospital, straight at the server: a patient and
# the Bundle of one inpatient stay.
post() { curl -sS -f -H 'Content-Type: application/fhir+json' --data-binary @- "http://$server/fhir/$1"; }
patient=$(post Patient <"$here/patient.json" | node -p 'JSON.parse(require("fs").readFileSync(0)).id')
bundle=$(sed "s/@PATIENT@/$patient/g" "$here/stay.json" | post Bundle | node -p 'JSON.parse(require("fs").readFileSync(0)).id')
echo "   http://$server/fhir: Patient/$patient and Bundle/$bundle (the stay)"

echo "== Identities: the hospital's EHR and ward (EU), the research partner (US)"
"$medgate" dev-ca init --dir "$work/ca-klinikum" --trust-domain klinikum.example.de >/dev/null
"$medgate" dev-ca init --dir "$work/ca-research" --trust-domain research.example.edu >/dev/null
"$medgate" dev-ca issue --dir "$work/ca-klinikum" --spiffe-id spiffe://klinikum.example.de/ehr --out "$work/ehr" >/dev/null
"$medgate" dev-ca issue --dir "$work/ca-klinikum" --spiffe-id spiffe://klinikum.example.de/ward/cardiology --out "$work/ward" >/dev/null
"$medgate" dev-ca issue --dir "$work/ca-research" --spiffe-id spiffe://research.example.edu/registry --out "$work/registry" >/dev/null
bundles=("$work/ehr/bundle.pem" "$work/registry/bundle.pem")
"$medgate" keys init --keyring "$work/keys/keyring.json" >/dev/null
keyring=MEDGATE_KEYRING=$work/keys/keyring.json

echo "== The EHR's inbound sidecar, with policy.yaml"
identity "$work/ehr" "${bundles[@]}"
sidecar ehr "${ids[@]}" "$keyring" MEDGATE_POLICY_FILE="$here/policy.yaml" \
	MEDGATE_INBOUND_LISTEN=127.0.0.1:0 MEDGATE_INBOUND_UPSTREAM="$server" MEDGATE_INBOUND_PROTOCOL=http
ehr_in=$(listen_addr ehr inbound)

echo "== The ward's and the research partner's outbound sidecars"
for client in ward registry; do
	identity "$work/$client" "${bundles[@]}"
	sidecar "$client" "${ids[@]}" "$keyring" \
		MEDGATE_OUTBOUND_LISTEN=127.0.0.1:0 MEDGATE_OUTBOUND_PEER="$ehr_in" \
		MEDGATE_OUTBOUND_PEER_ID=spiffe://klinikum.example.de/ehr MEDGATE_OUTBOUND_PROTOCOL=http
done
ward=$(listen_addr ward outbound)
registry=$(listen_addr registry outbound)
echo "   the ward's FHIR client uses http://$ward/fhir, the partner's http://$registry/fhir"

# read CLIENT_ADDR PATH OUT: a plain FHIR read, as the client app does it.
read_fhir() { curl -sS -f -o "$3" "http://$1/fhir/$2" || fail "GET $2 through $1"; }
for what in "Patient/$patient" "Bundle/$bundle"; do
	name=${what%%/*}
	read_fhir "$ward" "$what" "$work/$name.ward.json"
	read_fhir "$registry" "$what" "$work/$name.registry.json"
	echo
	echo "== GET $what, by the ward (EU) and by the research partner (US):"
	node "$here/compare.js" "$work/$name.ward.json" "$work/$name.registry.json" | sed 's/^/   /'
done
echo

status=0
for name in Patient Bundle; do
	grep -q Marchetti "$work/$name.ward.json" || { echo "the ward did not read $name whole" >&2; status=1; }
	for phi in Marchetti Zebulon Quirin A123456780 MRN-0042177 "5550 1234" z.marchetti 1961-07-23 Lindenallee Hamburg 20259 "$patient" 2026-03-0; do
		if grep -q -- "$phi" "$work/$name.registry.json"; then
			echo "$name: \"$phi\" crossed to the US" >&2
			status=1
		fi
	done
done
grep -q '"I21.4"' "$work/Bundle.registry.json" && grep -q '"value":212' "$work/Bundle.registry.json" ||
	{ echo "the stay lost its clinical content on the way to the US" >&2; status=1; }
[ "$status" -eq 0 ] || fail "the records were not masked as policy.yaml says"

echo "== The EHR sidecar's access events: who was admitted, under which rule, and what they read"
node -e '
for (const l of require("fs").readFileSync(process.argv[1], "utf8").split("\n")) {
  if (!l) continue;
  const e = JSON.parse(l);
  if (e.kind === "admission") {
    const how = e.verdict === "deidentify" ? `de-identified with ${e.profile}, legal basis ${e.legal_basis}` : e.verdict;
    console.log(`   admission  ${e.peer_id} (${e.peer_jurisdiction}): ${how}`);
  } else if (e.kind === "object") {
    const who = e.object.patient ? `, patient ${e.object.patient}` : "";
    console.log(`   object     ${e.object.operation}${who}, masked with ${e.object.profile}`);
  }
}' "$work/ehr.events.jsonl"
grep -qs -e Marchetti -e MRN-0042177 "${medgate_logs[@]}" && fail "PHI in a sidecar's log or events"

echo
echo "OK: the ward read the records whole; the research partner read them de-identified per registry-study."
