package posture

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// PatternKind says how an IDPattern matches.
type PatternKind int

const (
	// PatternExact matches one SPIFFE ID.
	PatternExact PatternKind = iota
	// PatternTrustDomain ("spiffe://td/*") matches every ID in a trust
	// domain.
	PatternTrustDomain
	// PatternPrefix ("spiffe://td/path/*") matches every ID strictly below
	// a path: "spiffe://td/path/x" but not "spiffe://td/path" itself, nor
	// "spiffe://td/pathology".
	PatternPrefix
)

// IDPattern matches SPIFFE IDs: an exact ID, "spiffe://td/*" for a whole
// trust domain, or "spiffe://td/path/*" for the IDs below a path. No other
// wildcard exists. The zero value matches nothing. IDPattern is a value
// type, safe for concurrent use.
type IDPattern struct {
	raw  string
	kind PatternKind
	td   spiffeid.TrustDomain
	// path is the exact path (PatternExact) or the prefix including its
	// trailing slash (PatternPrefix).
	path string
}

// ParseIDPattern parses s as an IDPattern.
func ParseIDPattern(s string) (IDPattern, error) {
	if base, ok := strings.CutSuffix(s, "/*"); ok {
		id, err := spiffeid.FromString(base)
		if err != nil {
			return IDPattern{}, fmt.Errorf("posture: id pattern %q: %w", s, err)
		}
		if id.Path() == "" {
			return IDPattern{raw: s, kind: PatternTrustDomain, td: id.TrustDomain()}, nil
		}
		return IDPattern{raw: s, kind: PatternPrefix, td: id.TrustDomain(), path: id.Path() + "/"}, nil
	}
	if strings.Contains(s, "*") {
		return IDPattern{}, fmt.Errorf("posture: id pattern %q: a wildcard may only be a final \"/*\"", s)
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return IDPattern{}, fmt.Errorf("posture: id pattern %q: %w", s, err)
	}
	return IDPattern{raw: s, kind: PatternExact, td: id.TrustDomain(), path: id.Path()}, nil
}

// MustParseIDPattern is ParseIDPattern for patterns known to be valid; it
// panics otherwise.
func MustParseIDPattern(s string) IDPattern {
	p, err := ParseIDPattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Match reports whether id matches the pattern. A zero id matches nothing.
func (p IDPattern) Match(id spiffeid.ID) bool {
	if p.raw == "" || id.IsZero() || id.TrustDomain() != p.td {
		return false
	}
	switch p.kind {
	case PatternTrustDomain:
		return true
	case PatternPrefix:
		return strings.HasPrefix(id.Path(), p.path)
	default:
		return id.Path() == p.path
	}
}

// Kind says how the pattern matches.
func (p IDPattern) Kind() PatternKind { return p.kind }

// TrustDomain is the trust domain the pattern lies in.
func (p IDPattern) TrustDomain() spiffeid.TrustDomain { return p.td }

// String returns the pattern as written.
func (p IDPattern) String() string { return p.raw }

// IsZero reports whether p is the zero pattern.
func (p IDPattern) IsZero() bool { return p.raw == "" }

// MarshalText returns the pattern as written.
func (p IDPattern) MarshalText() ([]byte, error) { return []byte(p.raw), nil }

// specificity orders patterns that match the same ID: an exact ID beats a
// prefix, a longer prefix beats a shorter one, and any prefix beats a trust
// domain.
func (p IDPattern) specificity() int {
	switch p.kind {
	case PatternExact:
		return 1 << 20
	case PatternPrefix:
		return 1 + len(p.path)
	default:
		return 0
	}
}
