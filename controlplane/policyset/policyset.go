// Package policyset turns the policy documents an admin applied into what
// each sidecar receives: the documents that apply to it, compiled with the
// same loader the sidecar uses, and versioned by content.
//
// An AccessPolicy document may name the sidecars it is for with the
// annotation medgate.io/sidecars: a comma-separated list of SPIFFE ID
// patterns (spiffe://td/path, spiffe://td/* or spiffe://td/path/*). An
// AccessPolicy without it goes to every sidecar. Every other kind
// (posture profiles, jurisdictions, residency rules, masking profiles) goes
// to every sidecar, so a selection is valid whenever the whole set is.
package policyset

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/medgate/medgate/controlplane/api"
	"github.com/medgate/medgate/identity"
	"github.com/medgate/medgate/posture"
)

// SidecarsAnnotation selects the sidecars an AccessPolicy is for.
const SidecarsAnnotation = "medgate.io/sidecars"

// Limits on an applied set.
const (
	MaxDocuments = 1000
	MaxTotalSize = 16 << 20
)

// Version is the content hash of an applied set: the documents' names and
// bytes in name order. The same documents always give the same version,
// whichever control plane replica computes it.
func Version(docs []*api.Document) string {
	sorted := slices.Clone(docs)
	slices.SortFunc(sorted, func(a, b *api.Document) int { return strings.Compare(a.GetName(), b.GetName()) })
	h := sha256.New()
	for _, d := range sorted {
		fmt.Fprintf(h, "%d:%s%d:", len(d.GetName()), d.GetName(), len(d.GetYaml()))
		h.Write(d.GetYaml())
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Compile validates an applied set as one policy: Load, and every
// document's sidecar selector. Errors name the document and line (see
// posture.FieldError).
func Compile(docs []*api.Document) (*posture.Policy, error) {
	p, err := Load(docs)
	if err != nil {
		return nil, err
	}
	// Every selector must parse, or a sidecar would silently miss a route.
	for _, d := range docs {
		for i, part := range split(d.GetYaml()) {
			if _, _, err := selector(part); err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", d.GetName(), i+1, err)
			}
		}
	}
	return p, nil
}

// Load compiles docs as one policy, as a sidecar does with the set it
// receives, within the limits on a set's size.
func Load(docs []*api.Document) (*posture.Policy, error) {
	if len(docs) == 0 {
		return nil, fmt.Errorf("no policy documents")
	}
	if len(docs) > MaxDocuments {
		return nil, fmt.Errorf("%d documents, more than the limit of %d", len(docs), MaxDocuments)
	}
	files := make([]posture.File, 0, len(docs))
	seen := map[string]bool{}
	total := 0
	for _, d := range docs {
		if d.GetName() == "" {
			return nil, fmt.Errorf("a document has no name")
		}
		if seen[d.GetName()] {
			return nil, fmt.Errorf("document %q given twice", d.GetName())
		}
		seen[d.GetName()] = true
		total += len(d.GetYaml())
		files = append(files, posture.File{Name: d.GetName(), Data: d.GetYaml()})
	}
	if total > MaxTotalSize {
		return nil, fmt.Errorf("documents total %d bytes, more than the limit of %d", total, MaxTotalSize)
	}
	return posture.ParseFiles(files...)
}

// ForNode builds the policy set of one sidecar from an applied set: the
// documents that apply to node, compiled, with the compiled policy's
// content hash as the set's version. A control plane serving many
// sidecars uses Prepare once per applied set instead.
func ForNode(sourceVersion string, docs []*api.Document, node spiffeid.ID) (*api.PolicySet, *posture.Policy, error) {
	s, err := Prepare(sourceVersion, docs)
	if err != nil {
		return nil, nil, err
	}
	return s.ForNode(node)
}

// Set is an applied set cut into documents with their selectors, ready to
// build each sidecar's policy set. Sidecars that select the same documents
// share one compiled set. A Set is safe for concurrent use.
type Set struct {
	source string
	docs   []*api.Document
	parts  [][]part // per document

	mu    sync.Mutex
	built map[string]built // by selection
}

type part struct {
	yaml     []byte
	sidecars identity.Patterns // nil: every sidecar
}

type built struct {
	set *api.PolicySet
	p   *posture.Policy
	err error
}

// Prepare cuts an applied set into its documents and reads their
// selectors.
func Prepare(sourceVersion string, docs []*api.Document) (*Set, error) {
	s := &Set{source: sourceVersion, docs: docs, parts: make([][]part, len(docs)), built: map[string]built{}}
	for i, d := range docs {
		for _, y := range split(d.GetYaml()) {
			ps, isAccess, err := selector(y)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", d.GetName(), err)
			}
			if !isAccess {
				ps = nil
			}
			s.parts[i] = append(s.parts[i], part{yaml: y, sidecars: ps})
		}
	}
	return s, nil
}

// ForNode returns node's policy set and its compiled policy.
func (s *Set) ForNode(node spiffeid.ID) (*api.PolicySet, *posture.Policy, error) {
	// The selection: one bit per document part.
	var key []byte
	for _, parts := range s.parts {
		for _, p := range parts {
			if p.sidecars == nil || p.sidecars.Match(node) {
				key = append(key, '1')
			} else {
				key = append(key, '0')
			}
		}
		key = append(key, '/')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.built[string(key)]; ok {
		return b.set, b.p, b.err
	}
	var out []*api.Document
	k := 0
	for i, d := range s.docs {
		var keep [][]byte
		for _, p := range s.parts[i] {
			if key[k] == '1' {
				keep = append(keep, p.yaml)
			}
			k++
		}
		k++ // the '/'
		switch {
		case len(keep) == len(s.parts[i]):
			out = append(out, d)
		case len(keep) > 0:
			out = append(out, &api.Document{Name: d.GetName(), Yaml: bytes.Join(keep, []byte("---\n"))})
		}
	}
	var b built
	b.p, b.err = Load(out)
	if b.err == nil {
		b.set = &api.PolicySet{Name: api.PolicySetName, Version: b.p.Version, SourceVersion: s.source, Documents: out}
	}
	s.built[string(key)] = b
	return b.set, b.p, b.err
}

// split cuts a YAML stream into its documents at lines holding only "---".
// Leading comments stay with the document they precede.
func split(data []byte) [][]byte {
	var parts [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), posture.MaxPolicyFileSize+1)
	for sc.Scan() {
		line := sc.Bytes()
		if t := bytes.TrimRight(line, " \t\r"); bytes.Equal(t, []byte("---")) {
			if len(bytes.TrimSpace(cur.Bytes())) > 0 {
				parts = append(parts, bytes.Clone(cur.Bytes()))
			}
			cur.Reset()
			continue
		}
		cur.Write(line)
		cur.WriteByte('\n')
	}
	if len(bytes.TrimSpace(cur.Bytes())) > 0 {
		parts = append(parts, bytes.Clone(cur.Bytes()))
	}
	return parts
}

// selector reads one document's kind and sidecar selector. ps is nil when
// the document names no sidecars.
func selector(doc []byte) (ps identity.Patterns, isAccess bool, err error) {
	var head struct {
		Kind     string `yaml:"kind"`
		Metadata struct {
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		// The loader reports syntax errors with their line; here the
		// document simply selects nothing special.
		return nil, false, nil
	}
	v, ok := head.Metadata.Annotations[SidecarsAnnotation]
	if !ok {
		return nil, head.Kind == posture.KindAccessPolicy, nil
	}
	if head.Kind != posture.KindAccessPolicy {
		return nil, false, fmt.Errorf("%s: only an AccessPolicy can name its sidecars", SidecarsAnnotation)
	}
	ps, err = identity.ParsePatterns(v)
	if err != nil {
		return nil, true, fmt.Errorf("%s: %w", SidecarsAnnotation, err)
	}
	if len(ps) == 0 {
		return nil, true, fmt.Errorf("%s: empty; remove the annotation to send the policy to every sidecar", SidecarsAnnotation)
	}
	return ps, true, nil
}
