package store

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// ReportFormats lists the formats WriteReport accepts.
var ReportFormats = []string{"table", "json", "csv"}

// reportColumns are the CSV columns, in order: the entry's own fields, then
// the record's, with "object.x" flattened to "object_x" (patient and
// study_uid keep their plain names).
var reportColumns = []string{
	"index", "received", "source", "seq",
	"time", "kind", "route", "direction", "session_id",
	"local_id", "peer_id", "peer_addr", "verdict", "reasons", "profile", "policy_version",
	"bytes_to_peer", "bytes_from_peer", "outcome", "data_class",
	"local_jurisdiction", "peer_jurisdiction", "legal_basis", "device_id", "device_os",
	"object_protocol", "object_operation", "patient", "study_uid", "series_uid", "instance_uid",
	"object_sha256", "object_profile", "object_profile_version",
	"hash",
}

// WriteReport writes entries for breach response (who accessed what, from
// which jurisdiction and device, under which policy version) as "table"
// (aligned columns for a terminal), "json" (an array of objects, each with
// the entry's fields and its record as stored) or "csv" (a header row and
// one row per entry, the record's fields flattened; "reasons" joined with
// ";").
//
// Text from records is untrusted: the table replaces control characters so
// a record cannot drive the terminal, and CSV cells that a spreadsheet
// would run as a formula (starting with = + - @) are prefixed with '.
func WriteReport(w io.Writer, format string, entries []Entry) error {
	bw := bufio.NewWriter(w)
	var err error
	switch format {
	case "table":
		err = writeTable(bw, entries)
	case "json":
		err = writeJSON(bw, entries)
	case "csv":
		err = writeCSV(bw, entries)
	default:
		return fmt.Errorf("store: report format %q, want one of %s", format, strings.Join(ReportFormats, ", "))
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("store: write %s report: %w", format, err)
	}
	return nil
}

// reportRow is an entry's report fields by column name.
func reportRow(e *Entry) map[string]string {
	row := map[string]string{
		"index":    strconv.FormatUint(e.Index, 10),
		"received": e.Received.UTC().Format(time.RFC3339Nano),
		"source":   e.Source,
		"seq":      strconv.FormatUint(e.Seq, 10),
		"hash":     hex.EncodeToString(e.Hash),
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(e.Record))
	d.UseNumber()
	if d.Decode(&m) != nil {
		return row
	}
	for _, k := range reportColumns {
		if _, ok := row[k]; !ok {
			row[k] = scalar(m[k])
		}
	}
	if obj, ok := m["object"].(map[string]any); ok {
		for _, k := range []string{"protocol", "operation", "sha256", "profile", "profile_version"} {
			row["object_"+k] = scalar(obj[k])
		}
		for _, k := range []string{"patient", "study_uid", "series_uid", "instance_uid"} {
			row[k] = scalar(obj[k])
		}
	}
	return row
}

// scalar renders a JSON value as one cell: strings as they are, numbers
// and booleans as JSON, lists joined with ";", objects as compact JSON.
func scalar(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			parts[i] = scalar(x)
		}
		return strings.Join(parts, ";")
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func writeTable(w io.Writer, entries []Entry) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tTIME\tKIND\tVERDICT\tLOCAL\tPEER\tJURISDICTION\tDEVICE\tROUTE\tPATIENT\tSTUDY\tPOLICY")
	for i := range entries {
		r := reportRow(&entries[i])
		jur := r["local_jurisdiction"] + "->" + r["peer_jurisdiction"]
		if jur == "->" {
			jur = ""
		}
		dev := r["device_id"]
		if r["device_os"] != "" {
			dev += " (" + r["device_os"] + ")"
		}
		cells := []string{r["index"], r["time"], r["kind"], r["verdict"], r["local_id"], r["peer_id"],
			jur, dev, r["route"], r["patient"], r["study_uid"], r["policy_version"]}
		for j, c := range cells {
			cells[j] = printable(c)
			if cells[j] == "" {
				cells[j] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// printable replaces control characters (and tabs, which would break the
// columns) with U+FFFD.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return '\uFFFD'
		}
		return r
	}, s)
}

type jsonEntry struct {
	Index    uint64          `json:"index"`
	Received time.Time       `json:"received"`
	Source   string          `json:"source"`
	Seq      uint64          `json:"seq"`
	Hash     string          `json:"hash"`
	Record   json.RawMessage `json:"record"`
}

func writeJSON(w io.Writer, entries []Entry) error {
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	for i := range entries {
		e := &entries[i]
		b, err := json.Marshal(jsonEntry{e.Index, e.Received.UTC(), e.Source, e.Seq, hex.EncodeToString(e.Hash), e.Record})
		if err != nil {
			return fmt.Errorf("entry %d: %w", e.Index, err)
		}
		sep := ",\n"
		if i == 0 {
			sep = "\n"
		}
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "\n]\n")
	return err
}

func writeCSV(w io.Writer, entries []Entry) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(reportColumns); err != nil {
		return err
	}
	rec := make([]string, len(reportColumns))
	for i := range entries {
		r := reportRow(&entries[i])
		for j, k := range reportColumns {
			rec[j] = defang(r[k])
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// defang keeps a spreadsheet from taking a cell as a formula.
func defang(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
