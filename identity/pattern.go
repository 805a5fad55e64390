package identity

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Pattern matches SPIFFE IDs. Three forms are accepted:
//
//	spiffe://td/path     exactly this ID
//	spiffe://td/*        any ID in trust domain td
//	spiffe://td/path/*   any ID below td/path (not td/path itself)
//
// The zero Pattern matches nothing.
type Pattern struct {
	td     spiffeid.TrustDomain
	path   string // exact path, or prefix ending in "/" when prefix is set
	prefix bool
	raw    string
}

// ParsePattern parses one pattern. Wildcards other than a final "/*" are
// refused: a pattern must never match more than its author can read off it.
func ParsePattern(s string) (Pattern, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Pattern{}, errors.New("empty SPIFFE ID pattern")
	}
	body, wildcard := strings.CutSuffix(s, "/*")
	if strings.Contains(body, "*") {
		return Pattern{}, fmt.Errorf("SPIFFE ID pattern %q: '*' is only allowed as a final path segment", s)
	}
	if wildcard {
		if td, err := spiffeid.TrustDomainFromString(body); err == nil && !strings.Contains(strings.TrimPrefix(body, "spiffe://"), "/") {
			return Pattern{td: td, path: "/", prefix: true, raw: s}, nil
		}
		id, err := spiffeid.FromString(body)
		if err != nil {
			return Pattern{}, fmt.Errorf("SPIFFE ID pattern %q: %w", s, err)
		}
		return Pattern{td: id.TrustDomain(), path: id.Path() + "/", prefix: true, raw: s}, nil
	}
	id, err := spiffeid.FromString(body)
	if err != nil {
		return Pattern{}, fmt.Errorf("SPIFFE ID pattern %q: %w", s, err)
	}
	if id.Path() == "" {
		return Pattern{}, fmt.Errorf("SPIFFE ID pattern %q: names a trust domain, not a workload; use %q for every ID in it", s, s+"/*")
	}
	return Pattern{td: id.TrustDomain(), path: id.Path(), raw: s}, nil
}

// Match reports whether id matches the pattern.
func (p Pattern) Match(id spiffeid.ID) bool {
	if p.raw == "" || id.IsZero() || id.TrustDomain() != p.td {
		return false
	}
	if p.prefix {
		// p.path ends in "/": "/a/" matches "/a/b" but neither "/a" nor "/ab".
		return id.Path() != "" && strings.HasPrefix(id.Path(), p.path)
	}
	return id.Path() == p.path
}

// TrustDomain returns the trust domain the pattern is confined to.
func (p Pattern) TrustDomain() spiffeid.TrustDomain { return p.td }

func (p Pattern) String() string { return p.raw }

// Patterns is a list of patterns; an ID is allowed when any one matches.
// The empty list matches nothing.
type Patterns []Pattern

// ParsePatterns parses a comma-separated list, reporting every bad entry.
func ParsePatterns(s string) (Patterns, error) {
	var ps Patterns
	var errs []error
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		p, err := ParsePattern(part)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ps = append(ps, p)
	}
	return ps, errors.Join(errs...)
}

// Match reports whether any pattern matches id.
func (ps Patterns) Match(id spiffeid.ID) bool {
	for _, p := range ps {
		if p.Match(id) {
			return true
		}
	}
	return false
}

func (ps Patterns) String() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.raw
	}
	return strings.Join(s, ",")
}

// IsZero reports whether p is the zero pattern, which matches nothing.
func (p Pattern) IsZero() bool { return p.raw == "" }

// MarshalText returns the pattern as written.
func (p Pattern) MarshalText() ([]byte, error) { return []byte(p.raw), nil }

// Specificity orders patterns that match the same ID: an exact ID beats a
// path prefix, a longer prefix beats a shorter one, and any prefix beats a
// whole trust domain.
func (p Pattern) Specificity() int {
	switch {
	case !p.prefix:
		return 1 << 20
	case p.path != "/":
		return 1 + len(p.path)
	}
	return 0
}
