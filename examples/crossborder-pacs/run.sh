#!/usr/bin/env bash
# An EU hospital's Orthanc and a US research lab's dcmtk tools, each behind
# medgate sidecars, under policy from the hospital's control plane: as two
# hosts in network namespaces when run as root, on this machine's loopback
# otherwise or with MEDGATE_EXAMPLE_LOOPBACK=1. See README.md.
#
# Needs: Orthanc (apt-get install orthanc), dcmtk, python3-pydicom (sample
# images), curl, and Go to build medgate unless MEDGATE_BIN names a binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
loopback_only=${MEDGATE_EXAMPLE_LOOPBACK:-} # read before lib.sh clears MEDGATE_*

# Binary, work directory, processes: shared by the examples.
# shellcheck source=../lib.sh
. "$here/../lib.sh"

# --- this example ------------------------------------------------------

# The hospital's host and the lab's: network namespaces in two-host mode,
# this machine (empty) on loopback; and the address the other host reaches
# each one on.
declare -A host_ns=([eu]="" [lab]="")
eu_ip=127.0.0.1
lab_ip=127.0.0.1

# on HOST CMD...: runs CMD on the hospital's host (eu) or the lab's (lab).
# CMD may be a function of this script; what it runs through start or
# in_ns runs on HOST too.
on() {
	local ns=${host_ns[$1]}
	shift
	if [ "$(type -t "$1")" = function ]; then
		"$@"
	else
		in_ns "$@"
	fi
}

# netns_works: whether this process can make a network namespace and run
# a program in it.
netns_works() {
	local probe=medgate-probe-$$ status=0
	command -v ip >/dev/null 2>&1 || return 1
	ip netns add "$probe" 2>/dev/null || return 1
	namespaces+=("$probe")
	ip netns exec "$probe" ip link set lo up 2>/dev/null || status=1
	ip netns delete "$probe" 2>/dev/null || status=1
	unset 'namespaces[-1]'
	return "$status"
}

# two_hosts: makes the hospital's and the lab's hosts, joined by a veth
# pair on 10.77.0.0/30. cleanup deletes them, and so the pair.
two_hosts() {
	local h
	for h in eu lab; do
		ip netns add "medgate-$h-$$"
		namespaces+=("medgate-$h-$$")
		host_ns[$h]=medgate-$h-$$
		ip -n "medgate-$h-$$" link set lo up
	done
	eu_ip=10.77.0.1
	lab_ip=10.77.0.2
	ip link add to-lab netns "${host_ns[eu]}" type veth peer name to-eu netns "${host_ns[lab]}"
	ip -n "${host_ns[eu]}" addr add "$eu_ip/30" dev to-lab
	ip -n "${host_ns[lab]}" addr add "$lab_ip/30" dev to-eu
	ip -n "${host_ns[eu]}" link set to-lab up
	ip -n "${host_ns[lab]}" link set to-eu up
}

# control_plane NAME VAR=VALUE...: starts medgate control-plane.
control_plane() {
	local name=$1
	shift
	start "$name" env MEDGATE_LOG_FORMAT=json MEDGATE_ADMIN_ADDR=127.0.0.1:0 "$@" "$medgate" control-plane
	wait_for "$name" '"msg":"control plane started"'
	medgate_logs+=("$work/$name.log")
}

# admin_addr NAME: the address of a process's /healthz, /readyz, /metrics.
admin_addr() { sed -n 's/.*"msg":"admin endpoint".*"addr":"\([^"]*\)".*/\1/p' "$work/$1.log" | sed -n 1p; }

# wait_ready NAME: waits until a sidecar's /readyz answers 200 (for one on
# a control plane: once it holds a policy). Run it on the sidecar's host.
wait_ready() {
	local addr
	addr=$(admin_addr "$1")
	for _ in $(seq 200); do
		in_ns curl -s -f -o /dev/null "http://$addr/readyz" && return 0
		sleep 0.1
	done
	fail "$1 is not ready: $(in_ns curl -s "http://$addr/readyz")"
}

# free_port HOST: a TCP port nothing listens on now on HOST's loopback, for
# programs that cannot be told to pick their own and report it.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		on "$1" bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$p" 2>/dev/null || { echo "$p"; return; }
	done
}

# show DICOM_FILE...: one line per file with the attributes that matter here.
show() {
	local f kw line
	for f in "$@"; do
		line=""
		for kw in PatientName PatientID PatientBirthDate StudyDate ModalitiesInStudy StudyInstanceUID; do
			line+=" $kw=$(value "$f" "$kw")"
		done
		echo "  $line"
	done
}

# json_field KEY: the value of "KEY" in the JSON object on stdin (a string
# or a list of strings; enough for access events).
json_field() { sed -n "s/.*\"$1\":\(\"[^\"]*\"\|\[[^]]*\]\).*/\1/p" | tr -d '"' | sed -n 1p; }

# value FILE KEYWORD: one attribute's value, as dcmdump shows it.
value() {
	dcmdump -q +L +P "$2" "$1" 2>/dev/null | sed -n 1p |
		sed -n 's/^([0-9a-f,]*) [A-Z][A-Z] \[\(.*\)\] *#.*/\1/p; s/^([0-9a-f,]*) [A-Z][A-Z] \([^[(][^#]*[^ #]\) *#.*/\1/p'
}

# --- this example ------------------------------------------------------

need curl "apt-get install curl"
for tool in storescu storescp findscu movescu dcmdump dcmodify; do need "$tool" "apt-get install dcmtk"; done
orthanc=$(command -v Orthanc || echo /usr/sbin/Orthanc)
[ -x "$orthanc" ] || { echo "run.sh: Orthanc not found: apt-get install orthanc" >&2; exit 2; }
samples=/usr/lib/python3/dist-packages/pydicom/data/test_files
[ -e "$samples/CT_small.dcm" ] || { echo "run.sh: no sample images in $samples: apt-get install python3-pydicom" >&2; exit 2; }

if [ "$loopback_only" = 1 ]; then
	echo "== Mode: loopback, everything on this machine's 127.0.0.1 (MEDGATE_EXAMPLE_LOOPBACK=1)"
elif [ "$(id -u)" -ne 0 ]; then
	echo "== Mode: loopback, everything on this machine's 127.0.0.1 (run as root for two hosts in network namespaces)"
elif ! netns_works; then
	echo "== Mode: loopback, everything on this machine's 127.0.0.1 (ip netns does not work here)"
else
	two_hosts
	echo "== Mode: two hosts in network namespaces, the hospital's ${host_ns[eu]} ($eu_ip) and the lab's ${host_ns[lab]} ($lab_ip)"
fi

echo "== Identities: the hospital (EU) and the lab (US) each have a CA (SPIRE in production)"
"$medgate" dev-ca init --dir "$work/ca-ospedale" --trust-domain ospedale.example.it >/dev/null
"$medgate" dev-ca init --dir "$work/ca-lab" --trust-domain lab.example.com >/dev/null
for id in control-plane admin/alice pacs pacs-mover; do
	"$medgate" dev-ca issue --dir "$work/ca-ospedale" --spiffe-id "spiffe://ospedale.example.it/$id" --out "$work/id/${id//\//-}" >/dev/null
done
for id in ws/reader1 ws/laptop7 store; do
	"$medgate" dev-ca issue --dir "$work/ca-lab" --spiffe-id "spiffe://lab.example.com/$id" --out "$work/id/lab-${id//\//-}" >/dev/null
done
# Every process here trusts both CAs (SPIFFE federation).
bundles=("$work/id/pacs/bundle.pem" "$work/id/lab-store/bundle.pem")
# The hospital's keyring: every sidecar here seals data under it (in
# production an HSM or KMS the hospital controls).
"$medgate" keys init --keyring "$work/keys/keyring.json" >/dev/null
keyring=MEDGATE_KEYRING=$work/keys/keyring.json

echo "== Device posture: the lab's MDM (a development issuer) vouches for two devices"
"$medgate" posture issuer-init --dir "$work/mdm" --name lab-mdm >/dev/null
patched=$(date -u -d '3 days ago' +%Y-%m-%dT%H:%M:%SZ)
cat >"$work/reader1.json" <<JSON
{"device_id":"lab-reader-01","os":{"name":"debian","version":"12"},"disk_encrypted":true,"firewall":true,"last_patch":"$patched"}
JSON
cat >"$work/laptop7.json" <<JSON
{"device_id":"lab-laptop-07","os":{"name":"debian","version":"12"},"disk_encrypted":false,"firewall":true,"last_patch":"$patched"}
JSON
for dev in reader1 laptop7; do
	"$medgate" posture issue --dir "$work/mdm" --svid "$work/id/lab-ws-$dev/svid.pem" --signals "$work/$dev.json" \
		--ttl 1h --out "$work/$dev.token" >/dev/null
done
echo "   ws/reader1: encrypted disk; ws/laptop7: disk not encrypted"

echo "== The hospital's control plane (embedded store) and the policy set"
mkdir -p "$work/cp"
identity "$work/id/control-plane" "${bundles[@]}"
on eu control_plane cp "${ids[@]}" \
	MEDGATE_CP_LISTEN=127.0.0.1:0 MEDGATE_CP_STORE="$work/cp/store" MEDGATE_CP_AUDIT_KEY="$work/cp/audit.key" \
	MEDGATE_CP_ADMINS='spiffe://ospedale.example.it/admin/*' MEDGATE_CP_REPLICA=cp-1 \
	MEDGATE_CP_SIDECARS=spiffe://ospedale.example.it/pacs,spiffe://ospedale.example.it/pacs-mover
cp_addr=$(sed -n 's/.*"msg":"control plane started".*"listen":"\([^"]*\)".*/\1/p' "$work/cp.log")
cp_settings=(MEDGATE_CONTROL_PLANE="$cp_addr" MEDGATE_CONTROL_PLANE_ID=spiffe://ospedale.example.it/control-plane)
jwks=$(tr -d ' \n\t' <"$work/mdm/jwks.json")
policy=$(<"$here/policy.yaml")
printf '%s\n' "${policy//@POSTURE_ISSUER_JWKS@/"$jwks"}" >"$work/policy.yaml"
# admin ARGS...: runs medgate as the hospital's admin, alice.
admin() {
	identity "$work/id/admin-alice" "${bundles[@]}"
	on eu env "${ids[@]}" "${cp_settings[@]}" "$medgate" "$@"
}
admin policy apply -f "$work/policy.yaml" -m "dose study with the US lab" | sed 's/^/   /'

echo "== The lab's store (storescp) behind its inbound sidecar (US)"
mkdir -p "$work/lab-inbox"
store_port=$(free_port lab)
on lab start storescp storescp -aet LABSTORE -od "$work/lab-inbox" +uf "$store_port"
identity "$work/id/lab-store" "${bundles[@]}"
on lab sidecar lab-store "${ids[@]}" "$keyring" \
	MEDGATE_INBOUND_LISTEN="$lab_ip:0" MEDGATE_INBOUND_UPSTREAM="127.0.0.1:$store_port" \
	MEDGATE_INBOUND_ALLOW=spiffe://ospedale.example.it/pacs-mover
lab_store_in=$(listen_addr lab-store inbound)

echo "== The hospital's sidecar for C-MOVE results, toward the lab's store"
identity "$work/id/pacs-mover" "${bundles[@]}"
on eu sidecar mover "${ids[@]}" "$keyring" "${cp_settings[@]}" \
	MEDGATE_STATE_DIR="$work/state-mover" MEDGATE_OUTBOUND_LISTEN=127.0.0.1:0 MEDGATE_OUTBOUND_PEER="$lab_store_in" \
	MEDGATE_OUTBOUND_PEER_ID=spiffe://lab.example.com/store MEDGATE_OUTBOUND_PROTOCOL=dicom
mover_out=$(listen_addr mover outbound)

echo "== Orthanc, the hospital's PACS; its move destination LABSTORE is that sidecar"
orthanc_http=$(free_port eu)
orthanc_dicom=$(free_port eu)
mkdir -p "$work/orthanc"
# Orthanc answers any calling AE: the only way in from outside the hospital
# is the PACS sidecar, and medgate decides who gets through it.
cat >"$work/orthanc/orthanc.json" <<JSON
{
  "Name": "OSPEDALE-PACS", "DicomAet": "ORTHANC",
  "StorageDirectory": "$work/orthanc", "IndexDirectory": "$work/orthanc",
  "HttpPort": $orthanc_http, "DicomPort": $orthanc_dicom, "RemoteAccessAllowed": false,
  "DicomAlwaysAllowStore": true, "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowFind": true, "DicomAlwaysAllowMove": true,
  "DicomModalities": {"lab": ["LABSTORE", "127.0.0.1", ${mover_out##*:}]},
  "DicomAssociationCloseDelay": 0
}
JSON
on eu start orthanc "$orthanc" "$work/orthanc/orthanc.json"
for _ in $(seq 100); do on eu curl -s -f -o /dev/null "http://127.0.0.1:$orthanc_http/system" && break; sleep 0.1; done
on eu curl -s -f -o /dev/null "http://127.0.0.1:$orthanc_http/system" || { tail "$work/orthanc.log" >&2; fail "Orthanc did not start"; }

echo "== A modality inside the hospital stores two studies straight into Orthanc (C-STORE)"
cp "$samples/CT_small.dcm" "$work/ct.dcm"
cp "$samples/MR_small.dcm" "$work/mr.dcm"
dcmodify -q -nb -m "PatientName=Marchetti^Zebulon" -m PatientID=OSE-0042177 -m PatientBirthDate=19610723 \
	-m "InstitutionName=Ospedale San Esempio" -m "OtherPatientIDsSequence[0].PatientID=OSE-0042177" "$work/ct.dcm"
dcmodify -q -nb -m "PatientName=Rossi^Giulia" -m PatientID=OSE-0051002 -m PatientBirthDate=19750301 \
	-m "InstitutionName=Ospedale San Esempio" "$work/mr.dcm"
on eu storescu -aec ORTHANC 127.0.0.1 "$orthanc_dicom" "$work/ct.dcm" "$work/mr.dcm" || fail "C-STORE into Orthanc"
for f in "$work/ct.dcm" "$work/mr.dcm"; do
	echo "   $(value "$f" Modality): $(value "$f" PatientName), $(value "$f" PatientID), born $(value "$f" PatientBirthDate)"
done

echo "== The PACS's inbound sidecar, on the control plane's policy"
identity "$work/id/pacs" "${bundles[@]}"
on eu sidecar pacs "${ids[@]}" "$keyring" "${cp_settings[@]}" \
	MEDGATE_STATE_DIR="$work/state-pacs" MEDGATE_INBOUND_LISTEN="$eu_ip:0" \
	MEDGATE_INBOUND_UPSTREAM="127.0.0.1:$orthanc_dicom" MEDGATE_INBOUND_PROTOCOL=dicom
pacs_in=$(listen_addr pacs inbound)
on eu wait_ready pacs
on eu wait_ready mover
admin policy status | sed 's/^/   /'

echo "== The lab's two devices, each with an outbound sidecar carrying its posture token"
for dev in reader1 laptop7; do
	identity "$work/id/lab-ws-$dev" "${bundles[@]}"
	on lab sidecar "$dev" "${ids[@]}" "$keyring" \
		MEDGATE_POSTURE_TOKEN_FILE="$work/$dev.token" MEDGATE_OUTBOUND_LISTEN=127.0.0.1:0 \
		MEDGATE_OUTBOUND_PEER="$pacs_in" MEDGATE_OUTBOUND_PEER_ID=spiffe://ospedale.example.it/pacs \
		MEDGATE_OUTBOUND_PROTOCOL=dicom
done
reader1=$(listen_addr reader1 outbound)
laptop7=$(listen_addr laptop7 outbound)

echo
echo "== Inside the hospital: C-FIND straight at Orthanc returns the studies whole"
mkdir -p "$work/find-inside"
on eu findscu -S -aec ORTHANC -X -od "$work/find-inside" -k QueryRetrieveLevel=STUDY -k PatientName -k PatientID \
	-k PatientBirthDate -k StudyDate -k ModalitiesInStudy -k StudyInstanceUID 127.0.0.1 "$orthanc_dicom" || fail "C-FIND inside the hospital"
show "$work"/find-inside/rsp*.dcm

echo
echo "== From the lab's workstation (ws/reader1, posture met): C-FIND through the sidecars"
mkdir -p "$work/find-lab"
on lab findscu -S -aec ORTHANC -X -od "$work/find-lab" -k QueryRetrieveLevel=STUDY -k PatientName -k PatientID \
	-k PatientBirthDate -k StudyDate -k ModalitiesInStudy -k StudyInstanceUID "${reader1%:*}" "${reader1##*:}" || fail "C-FIND from the lab"
show "$work"/find-lab/rsp*.dcm
# The dose study wants the CT; the lab knows it only by its remapped UID.
remapped=""
for f in "$work"/find-lab/rsp*.dcm; do
	[ "$(value "$f" ModalitiesInStudy)" = CT ] && remapped=$(value "$f" StudyInstanceUID)
done
[ -n "$remapped" ] || fail "the lab's C-FIND did not find the CT study"
ct_study=$(value "$work/ct.dcm" StudyInstanceUID)

echo
echo "== From the lab: C-MOVE of the CT study, by the UID the lab knows, to LABSTORE"
echo "   (Orthanc sends it to the hospital's mover sidecar, which masks it on its way to the lab's store)"
on lab movescu -S -aec ORTHANC -aem LABSTORE -k QueryRetrieveLevel=STUDY -k StudyInstanceUID="$remapped" \
	"${reader1%:*}" "${reader1##*:}" || fail "C-MOVE from the lab"
for _ in $(seq 50); do compgen -G "$work/lab-inbox/*" >/dev/null && break; sleep 0.1; done
received=$(ls "$work"/lab-inbox/* 2>/dev/null | sed -n 1p)
[ -n "$received" ] || fail "nothing reached the lab's store"
echo "   dcmdump of the object the lab's storescp received, next to the one the hospital stored:"
printf '   %-24s %-48s %s\n' attribute "in Orthanc (EU)" "received at the lab (US)"
for kw in PatientName PatientID PatientBirthDate PatientSex PatientAge StudyDate InstitutionName StudyInstanceUID \
	SOPInstanceUID PatientIdentityRemoved DeidentificationMethod Modality Rows Columns; do
	printf '   %-24s %-48s %s\n' "$kw" "$(value "$work/ct.dcm" "$kw")" "$(value "$received" "$kw")"
done

echo
echo "== From the lab's other device (ws/laptop7, disk not encrypted): C-FIND"
mkdir -p "$work/find-laptop"
if on lab findscu -S -aec ORTHANC -od "$work/find-laptop" -X -k QueryRetrieveLevel=STUDY -k PatientID \
	"${laptop7%:*}" "${laptop7##*:}" >"$work/laptop-find.txt" 2>&1 && compgen -G "$work/find-laptop/rsp*" >/dev/null; then
	fail "the non-compliant device got answers"
fi
echo "   refused; findscu says: $(grep -m 1 -i -e error -e 'association' "$work/laptop-find.txt" | sed 's/^[EWI]: //')"
# The PACS sidecar sent its access event to the control plane, which
# keeps it in the hospital's audit store.
denial=""
for _ in $(seq 100); do
	denial=$(on eu "$medgate" audit query --store "$work/cp/store" --peer spiffe://lab.example.com/ws/laptop7 --verdict deny --format json 2>/dev/null |
		grep '"kind":"admission"' | sed -n 1p) && [ -n "$denial" ] && break
	sleep 0.1
done
[ -n "$denial" ] || fail "no access event for the refused device in the audit store"
echo "   the hospital's audit store holds the PACS sidecar's access event:"
for k in peer_id device_id device_os peer_jurisdiction verdict reasons policy_version; do
	printf '     %-18s %s\n' "$k" "$(json_field "$k" <<<"$denial")"
done

echo
echo "== Checks"
status=0
[ "$(json_field reasons <<<"$denial")" = "[disk_not_encrypted]" ] || { echo "the refusal does not give disk_not_encrypted" >&2; status=1; }
for f in "$work"/find-lab/rsp*.dcm "$received"; do
	for orig in Marchetti Rossi OSE-0042177 OSE-0051002 19610723 19750301 "San Esempio" "$ct_study"; do
		grep -q -a -- "$orig" "$f" && { echo "$(basename "$f") carries $orig across the border" >&2; status=1; }
	done
done
[ "$(value "$received" PatientIdentityRemoved)" = YES ] || { echo "the moved object is not marked de-identified" >&2; status=1; }
[ "$(value "$received" StudyInstanceUID)" = "$remapped" ] || { echo "the moved object is not under the UID the lab asked for" >&2; status=1; }
mkdir -p "$work/pixels-sent" "$work/pixels-received"
dcmdump -q +W "$work/pixels-sent" "$work/ct.dcm" >/dev/null && dcmdump -q +W "$work/pixels-received" "$received" >/dev/null
cmp -s <(cat "$work"/pixels-sent/*) <(cat "$work"/pixels-received/*) || { echo "the image changed on its way" >&2; status=1; }
grep -q -a Marchetti "$work"/find-inside/rsp*.dcm || { echo "the hospital does not see its own data whole" >&2; status=1; }
grep -qs -e Marchetti -e OSE-0042177 "${medgate_logs[@]}" && { echo "PHI in a medgate log or event" >&2; status=1; }
grep -rqs -e Marchetti -e OSE-0042177 "$work/cp" "$work"/state-* && { echo "PHI in the audit store or a sidecar's spool" >&2; status=1; }
[ "$status" -eq 0 ] || fail "see above"
echo "   masked at the lab with the image intact, whole inside the hospital, the non-compliant device refused for disk_not_encrypted"

echo
echo "== The hospital's audit trail: medgate audit report --since 1h"
on eu "$medgate" audit report --since 1h --store "$work/cp/store" | sed 's/^/   /'
on eu "$medgate" audit verify --store "$work/cp/store" --key "$work/cp/audit.key.pub" | sed 's/^/   /'

echo
echo "OK: imaging left the EU only de-identified, to a device that met the posture profile; the other was refused."
