package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOnlyControlPlaneKeepsOtherFigures(t *testing.T) {
	out := t.TempDir()
	old := Results{
		Rounds: 5,
		Figures: map[string][]Figure{
			"throughput":   {{Config: "medgate-tcp", Unit: "MB/s", Median: 900}},
			"cp_fanout_ms": {{Config: "p99", Unit: "ms", Median: 5000}},
		},
		Ratios: []Ratio{
			{Name: "throughput medgate-tcp / direct", Figure: "throughput", Of: "medgate-tcp", Against: "direct", Value: 0.5},
			{Name: "cp fan-out p99 ms", Figure: "cp_fanout_ms", Of: "p99", Value: 5000, Target: 1000},
		},
		Notes: []string{"nginx-pair: a note", "cp_fanout_ms: an old note"},
	}
	b, _ := json.Marshal(old)
	if err := os.WriteFile(filepath.Join(out, "latest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	// With both parts off, only the merge runs.
	res, err := measureControlPlane(context.Background(), options{out: out, rounds: 1}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var figures []string
	for name := range res.Figures {
		figures = append(figures, name)
	}
	if diff := cmp.Diff([]string{"throughput"}, figures); diff != "" {
		t.Errorf("figures (-want +got):\n%s", diff)
	}
	if len(res.Ratios) != 1 || res.Ratios[0].Figure != "throughput" {
		t.Errorf("ratios: %+v", res.Ratios)
	}
	if len(res.Notes) != 2 || res.Notes[0] != "nginx-pair: a note" || !strings.Contains(res.Notes[1], "-only controlplane") {
		t.Errorf("notes: %q", res.Notes)
	}
}

func TestStartPostgresWithoutBinariesFails(t *testing.T) {
	t.Setenv("MEDGATE_PG_BIN", t.TempDir())
	t.Setenv("MEDGATE_REQUIRE_POSTGRES", "")
	url, stop, err := startPostgres()
	if err == nil {
		stop()
		t.Fatalf("started a cluster at %s from an empty directory", url)
	}
	if !strings.Contains(err.Error(), "not found") {
		t.Errorf("error does not say what is missing: %v", err)
	}
}

func TestMeets(t *testing.T) {
	for _, c := range []struct {
		v, target float64
		higher    bool
		want      bool
	}{
		{1.1, 1.0, true, true},
		{0.9, 1.0, true, false},
		{0.9, 1.0, false, true},
		{1.1, 1.0, false, false},
		// No target: for information, whichever way is better.
		{2.13, 0, false, true},
		{0.34, 0, true, true},
	} {
		if got := meets(c.v, c.target, c.higher); got != c.want {
			t.Errorf("meets(%v, %v, %v) = %v, want %v", c.v, c.target, c.higher, got, c.want)
		}
	}
}
