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

// Compile validates docs as one policy. Errors name the document and line
// (see posture.FieldError).
func Compile(docs []*api.Document) (*posture.Policy, error) {
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
	p, err := posture.ParseFiles(files...)
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

// ForNode builds the policy set of one sidecar from an applied set: the
// documents that apply to node, compiled, with the compiled policy's
// content hash as the set's version.
func ForNode(sourceVersion string, docs []*api.Document, node spiffeid.ID) (*api.PolicySet, *posture.Policy, error) {
	var out []*api.Document
	for _, d := range docs {
		var keep [][]byte
		all := true
		for _, part := range split(d.GetYaml()) {
			ps, isAccess, err := selector(part)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", d.GetName(), err)
			}
			if isAccess && ps != nil && !ps.Match(node) {
				all = false
				continue
			}
			keep = append(keep, part)
		}
		switch {
		case all:
			out = append(out, d)
		case len(keep) > 0:
			out = append(out, &api.Document{Name: d.GetName(), Yaml: bytes.Join(keep, []byte("---\n"))})
		}
	}
	p, err := Compile(out)
	if err != nil {
		return nil, nil, err
	}
	return &api.PolicySet{
		Name:          api.PolicySetName,
		Version:       p.Version,
		SourceVersion: sourceVersion,
		Documents:     out,
	}, p, nil
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
