package store

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func reportEntries() []Entry {
	recv := time.Date(2026, 3, 1, 10, 0, 1, 0, time.UTC)
	rec := []string{
		`{"time":"2026-03-01T10:00:00Z","kind":"object","route":"pacs","local_id":"spiffe://eu/sidecar","peer_id":"spiffe://cn/lab",` +
			`"verdict":"deidentify","reasons":["residency","masked"],"policy_version":"3f2a","bytes_to_peer":1024,` +
			`"local_jurisdiction":"EU","peer_jurisdiction":"CN","device_id":"ws-17","device_os":"linux",` +
			`"object":{"protocol":"dicom","operation":"C-STORE","patient":"tokP1","study_uid":"1.2.3","sha256":"ab"},"extra":{"k":1}}`,
		`{"time":"2026-03-01T10:05:00Z","verdict":"deny","peer_id":"=HYPERLINK(\"x\")","device_id":"evil\u001b[31m\tterm"}`,
	}
	var out []Entry
	for i, r := range rec {
		e := Entry{Index: uint64(i + 1), Received: recv, Event: Event{Source: "spiffe://eu/sidecar", Seq: uint64(i + 1), Record: []byte(r)},
			Prev: zeroHash, Hash: bytes.Repeat([]byte{byte(i)}, 32)}
		out = append(out, e)
	}
	return out
}

func TestWriteReport(t *testing.T) {
	t.Parallel()
	es := reportEntries()

	t.Run("csv", func(t *testing.T) {
		var b bytes.Buffer
		if err := WriteReport(&b, "csv", es); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(&b).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 3 {
			t.Fatalf("%d rows, want a header and 2", len(rows))
		}
		if diff := cmp.Diff(reportColumns, rows[0]); diff != "" {
			t.Errorf("header (-want +got):\n%s", diff)
		}
		got := map[string]string{}
		for i, c := range rows[0] {
			got[c] = rows[1][i]
		}
		for k, v := range map[string]string{
			"index": "1", "source": "spiffe://eu/sidecar", "verdict": "deidentify", "reasons": "residency;masked",
			"bytes_to_peer": "1024", "patient": "tokP1", "study_uid": "1.2.3", "object_operation": "C-STORE",
			"local_jurisdiction": "EU", "peer_jurisdiction": "CN", "device_id": "ws-17", "policy_version": "3f2a",
			"received": "2026-03-01T10:00:01Z", "hash": strings.Repeat("00", 32),
		} {
			if got[k] != v {
				t.Errorf("column %s = %q, want %q", k, got[k], v)
			}
		}
		if peer := rows[2][indexOf(rows[0], "peer_id")]; !strings.HasPrefix(peer, "'=") {
			t.Errorf("formula cell not defanged: %q", peer)
		}
	})

	t.Run("json", func(t *testing.T) {
		var b bytes.Buffer
		if err := WriteReport(&b, "json", es); err != nil {
			t.Fatal(err)
		}
		var got []struct {
			Index    uint64          `json:"index"`
			Received time.Time       `json:"received"`
			Source   string          `json:"source"`
			Seq      uint64          `json:"seq"`
			Hash     string          `json:"hash"`
			Record   json.RawMessage `json:"record"`
		}
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("not a JSON array: %v\n%s", err, b.String())
		}
		if len(got) != 2 || got[1].Index != 2 || got[0].Source != "spiffe://eu/sidecar" || !got[0].Received.Equal(es[0].Received) {
			t.Errorf("got %+v", got)
		}
		var r0 map[string]any
		json.Unmarshal(got[0].Record, &r0)
		if r0["extra"] == nil || r0["verdict"] != "deidentify" {
			t.Errorf("record not carried whole: %s", got[0].Record)
		}
		var empty bytes.Buffer
		WriteReport(&empty, "json", nil)
		if strings.TrimSpace(empty.String()) != "[\n]" {
			t.Errorf("empty report = %q", empty.String())
		}
	})

	t.Run("table", func(t *testing.T) {
		var b bytes.Buffer
		if err := WriteReport(&b, "table", es); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "INDEX") {
			t.Fatalf("table:\n%s", out)
		}
		for _, want := range []string{"EU->CN", "ws-17 (linux)", "tokP1", "3f2a", "deidentify"} {
			if !strings.Contains(lines[1], want) {
				t.Errorf("row 1 lacks %q:\n%s", want, out)
			}
		}
		if strings.ContainsAny(out, "\x1b\t") {
			t.Errorf("control characters from a record reached the table:\n%q", out)
		}
	})

	if err := WriteReport(&bytes.Buffer{}, "xml", es); err == nil || !strings.Contains(err.Error(), "table, json, csv") {
		t.Errorf("unknown format: %v", err)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
