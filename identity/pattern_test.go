package identity

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestPatternMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		id      string
		want    bool
	}{
		{"exact", "spiffe://eu.example/pacs", "spiffe://eu.example/pacs", true},
		{"exact other path", "spiffe://eu.example/pacs", "spiffe://eu.example/pacs2", false},
		{"exact other domain", "spiffe://eu.example/pacs", "spiffe://cn.example/pacs", false},
		{"exact is not prefix", "spiffe://eu.example/pacs", "spiffe://eu.example/pacs/a", false},
		{"domain wildcard", "spiffe://eu.example/*", "spiffe://eu.example/a/b", true},
		{"domain wildcard other domain", "spiffe://eu.example/*", "spiffe://eu.example.evil/a", false},
		{"prefix child", "spiffe://eu.example/lab/*", "spiffe://eu.example/lab/ws1", true},
		{"prefix grandchild", "spiffe://eu.example/lab/*", "spiffe://eu.example/lab/a/b", true},
		{"prefix itself", "spiffe://eu.example/lab/*", "spiffe://eu.example/lab", false},
		{"prefix sibling sharing letters", "spiffe://eu.example/lab/*", "spiffe://eu.example/laboratory", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Match(spiffeid.RequireFromString(tt.id)); got != tt.want {
				t.Errorf("%s.Match(%s) = %v, want %v", tt.pattern, tt.id, got, tt.want)
			}
		})
	}
}

func TestParsePatternErrors(t *testing.T) {
	for _, s := range []string{"", "eu.example/pacs", "spiffe://eu.example", "spiffe://eu.example/*/x", "spiffe://eu.example/a*", "http://eu.example/a", "spiffe://EU.example/a"} {
		t.Run(s, func(t *testing.T) {
			if _, err := ParsePattern(s); err == nil {
				t.Errorf("ParsePattern(%q) succeeded, want error", s)
			}
		})
	}
}

func TestParsePatternsReportsEveryBadEntry(t *testing.T) {
	_, err := ParsePatterns("spiffe://a.example/x, bad1 ,spiffe://b.example/*,bad2")
	if err == nil {
		t.Fatal("want error")
	}
	for _, s := range []string{"bad1", "bad2"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	ps, err := ParsePatterns("spiffe://a.example/x,spiffe://b.example/*")
	if err != nil || len(ps) != 2 || !ps.Match(spiffeid.RequireFromString("spiffe://b.example/q")) {
		t.Fatalf("ParsePatterns = %v, %v", ps, err)
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"spiffe://eu.example/pacs", "spiffe://eu.example/*", "spiffe://eu.example/lab/*", "spiffe://eu.example/*/x"} {
		f.Add(s, "spiffe://eu.example/lab/ws1")
	}
	f.Fuzz(func(t *testing.T, pattern, id string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		sid, err := spiffeid.FromString(id)
		if err != nil {
			return
		}
		if p.Match(sid) && sid.TrustDomain() != p.TrustDomain() {
			t.Fatalf("%s matched %s in another trust domain", p, sid)
		}
		if p.Match(sid) && sid.Path() == "" {
			t.Fatalf("%s matched a trust domain ID %s", p, sid)
		}
	})
}
