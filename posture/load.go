package posture

import (
	"github.com/medgate/medgate/identity"

	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.yaml.in/yaml/v3"
)

// Limits on what the loader reads.
const (
	// MaxPolicyFileSize bounds one policy file.
	MaxPolicyFileSize = 4 << 20
	maxDocuments      = 10000
	maxDepth          = 64
)

// FieldError is one problem found in a policy document: where it is and
// which field is at fault. Parse and LoadFiles return all of them at once,
// joined.
type FieldError struct {
	File string
	// Line is 1-based; 0 when the problem concerns the whole file.
	Line int
	// Field is the path to the field from the document's root, such as
	// "spec.rules[2].to"; empty when the problem concerns the document.
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Parse compiles the policy documents in data, a YAML stream of one or
// more documents separated by "---". name is the file name errors give.
// On failure the error lists every problem found, each a *FieldError
// (reachable with errors.As).
func Parse(name string, data []byte) (*Policy, error) {
	return compile([]policyFile{{name: name, data: data}})
}

// LoadFiles reads and compiles the policy documents in the named files
// and directories as one policy. A directory contributes its *.yaml and
// *.yml files in name order, not its subdirectories. Errors name each
// file by the path it was reached through.
func LoadFiles(paths ...string) (*Policy, error) {
	files, err := ReadFiles(paths...)
	if err != nil {
		return nil, err
	}
	return ParseFiles(files...)
}

// ReadFiles reads the policy files LoadFiles would compile: the named
// files, and each named directory's *.yaml and *.yml files in name order.
// Each File is named by the path it was reached through.
func ReadFiles(paths ...string) ([]File, error) {
	if len(paths) == 0 {
		return nil, errors.New("posture: load policy: no files given")
	}
	var files []File
	var errs []error
	read := func(path string) {
		data, err := readLimited(path)
		if err != nil {
			errs = append(errs, &FieldError{File: path, Msg: err.Error()})
			return
		}
		files = append(files, File{Name: path, Data: data})
	}
	for _, path := range paths {
		fi, err := os.Stat(path)
		if err != nil {
			errs = append(errs, &FieldError{File: path, Msg: "cannot read: " + pathErr(err)})
			continue
		}
		if !fi.IsDir() {
			read(path)
			continue
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			errs = append(errs, &FieldError{File: path, Msg: "cannot list directory"})
			continue
		}
		found := false
		for _, e := range entries {
			n := e.Name()
			if e.IsDir() || strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
				continue
			}
			found = true
			read(filepath.Join(path, n))
		}
		if !found {
			errs = append(errs, &FieldError{File: path, Msg: "directory holds no *.yaml or *.yml file"})
		}
	}
	if len(errs) > 0 {
		return nil, invalid(errs)
	}
	return files, nil
}

// pathErr describes a file system error without repeating the path.
func pathErr(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, errors.New("cannot open")
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxPolicyFileSize+1))
	if err != nil {
		return nil, errors.New("cannot read")
	}
	if len(data) > MaxPolicyFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxPolicyFileSize)
	}
	return data, nil
}

func invalid(errs []error) error {
	return fmt.Errorf("posture: invalid policy:\n%w", errors.Join(errs...))
}

type policyFile struct {
	name string
	data []byte
}

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$`)
	routeRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	dataClassRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	codeRE      = regexp.MustCompile(`^[A-Z][A-Z0-9-]{1,15}$`)
	yamlLineRE  = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

// loader compiles documents from several files into one Policy.
type loader struct {
	p     Policy
	errs  []error
	later []func()

	kinds    map[string]Origin // kind + "/" + name
	routes   map[routeKey]Origin
	codes    map[string]bool
	bindings map[string]Origin
	nDocs    int
}

// src is the loader working on one file.
type src struct {
	*loader
	file string
}

func compile(files []policyFile) (*Policy, error) {
	l := &loader{
		kinds:    map[string]Origin{},
		routes:   map[routeKey]Origin{},
		codes:    map[string]bool{},
		bindings: map[string]Origin{},
	}
	for _, f := range files {
		s := &src{loader: l, file: f.name}
		s.parseFile(f.data)
	}
	if len(l.errs) == 0 && l.nDocs == 0 {
		l.errs = append(l.errs, &FieldError{File: files[0].name, Msg: "no policy documents"})
	}
	for _, f := range l.later {
		f()
	}
	l.checkOverlaps()
	if len(l.errs) > 0 {
		order := make(map[string]int, len(files))
		for i, f := range files {
			order[f.name] = i
		}
		slices.SortStableFunc(l.errs, func(a, b error) int {
			fa, _ := a.(*FieldError)
			fb, _ := b.(*FieldError)
			if fa == nil || fb == nil {
				return 0
			}
			if d := order[fa.File] - order[fb.File]; d != 0 {
				return d
			}
			return fa.Line - fb.Line
		})
		return nil, invalid(l.errs)
	}
	p := &l.p
	for code := range l.codes {
		p.Jurisdictions = append(p.Jurisdictions, code)
	}
	if err := p.finish(); err != nil {
		return nil, fmt.Errorf("posture: compile policy: %w", err)
	}
	return p, nil
}

func (s *src) errf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	s.errs = append(s.errs, &FieldError{File: s.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (s *src) origin(n *yaml.Node) Origin { return Origin{File: s.file, Line: n.Line} }

func (s *src) parseFile(data []byte) {
	if len(data) > MaxPolicyFileSize {
		s.errf(nil, "", "larger than %d bytes", MaxPolicyFileSize)
		return
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			s.yamlErr(err)
			return
		}
		if !s.document(&doc) {
			return
		}
	}
}

func (s *src) yamlErr(err error) {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		s.errs = append(s.errs, &FieldError{File: s.file, Line: line, Msg: "yaml: " + m[2]})
		return
	}
	s.errs = append(s.errs, &FieldError{File: s.file, Msg: msg})
}

// plain rejects aliases and very deep nesting anywhere below n.
func (s *src) plain(n *yaml.Node, depth int) bool {
	if n.Kind == yaml.AliasNode {
		s.errf(n, "", "YAML aliases are not supported in policy")
		return false
	}
	if depth > maxDepth {
		s.errf(n, "", "nested deeper than %d", maxDepth)
		return false
	}
	for _, c := range n.Content {
		if !s.plain(c, depth+1) {
			return false
		}
	}
	return true
}

// document compiles one document; it returns false when reading the file
// should stop.
func (s *src) document(doc *yaml.Node) bool {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return true
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return true // an empty document between separators
	}
	if s.nDocs++; s.nDocs > maxDocuments {
		s.errf(root, "", "more than %d documents", maxDocuments)
		return false
	}
	if s.plain(root, 0) {
		s.compileDocument(root)
	}
	return true
}

func (s *src) compileDocument(root *yaml.Node) {
	m := s.mapping(root, "", "apiVersion", "kind", "metadata", "spec")
	if m == nil {
		return
	}
	if v, ok := s.reqStr(m, root, "", "apiVersion"); ok && v != APIVersion {
		s.errf(m["apiVersion"], "apiVersion", "want %q, got %q", APIVersion, v)
	}
	kind, _ := s.reqStr(m, root, "", "kind")
	switch kind {
	case "", KindAccessPolicy, KindPostureProfile, KindJurisdictions, KindResidencyRules, KindMaskingProfile:
	default:
		s.errf(m["kind"], "kind", "unknown kind %q, want one of %s, %s, %s, %s, %s", kind,
			KindAccessPolicy, KindPostureProfile, KindJurisdictions, KindResidencyRules, KindMaskingProfile)
		kind = ""
	}
	name := ""
	if md := s.req(m, root, "", "metadata"); md != nil {
		mm := s.mapping(md, "metadata", "name", "labels", "annotations")
		if mm != nil {
			if n, ok := s.reqStr(mm, md, "metadata", "name"); ok {
				if !nameRE.MatchString(n) {
					s.errf(mm["name"], "metadata.name", "%q is not a valid name (lower case letters, digits, '-' and '.')", n)
				} else {
					name = n
				}
			}
			for _, k := range []string{"labels", "annotations"} {
				if v := mm[k]; v != nil {
					s.stringMap(v, "metadata."+k)
				}
			}
		}
	}
	spec := s.req(m, root, "", "spec")
	if spec == nil || kind == "" {
		return
	}
	if name != "" {
		key := kind + "/" + name
		if prev, dup := s.kinds[key]; dup {
			s.errf(m["metadata"], "metadata.name", "%s %q already defined at %s", kind, name, prev)
			return
		}
		s.kinds[key] = s.origin(root)
	}
	switch kind {
	case KindAccessPolicy:
		s.accessPolicy(name, spec)
	case KindPostureProfile:
		s.postureProfile(name, spec)
	case KindJurisdictions:
		s.jurisdictions(spec)
	case KindResidencyRules:
		s.residencyRules(spec)
	case KindMaskingProfile:
		s.maskingProfile(name, spec)
	}
}

// mapping checks that n is a mapping whose keys are all in allowed
// (any key when allowed is empty) and unique, and returns its values by
// key. It returns nil when n is not a mapping.
func (s *src) mapping(n *yaml.Node, path string, allowed ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		s.errf(n, path, "want a mapping, got %s", describe(n))
		return nil
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			s.errf(k, path, "keys must be plain strings")
			continue
		}
		fp := join(path, k.Value)
		if _, dup := out[k.Value]; dup {
			s.errf(k, fp, "defined twice")
			continue
		}
		if len(allowed) > 0 && !slices.Contains(allowed, k.Value) {
			s.errf(k, fp, "unknown field, want one of %s", strings.Join(allowed, ", "))
			continue
		}
		out[k.Value] = v
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return "a " + strings.TrimPrefix(n.ShortTag(), "!!")
	default:
		return "something else"
	}
}

// req returns the value of a required key, reporting its absence at the
// parent.
func (s *src) req(m map[string]*yaml.Node, parent *yaml.Node, path, key string) *yaml.Node {
	v, ok := m[key]
	if !ok || (v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null") {
		s.errf(parent, join(path, key), "required")
		return nil
	}
	return v
}

func (s *src) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		s.errf(n, path, "want a string, got %s", describe(n))
		return "", false
	}
	if n.Value == "" {
		s.errf(n, path, "must not be empty")
		return "", false
	}
	return n.Value, true
}

func (s *src) reqStr(m map[string]*yaml.Node, parent *yaml.Node, path, key string) (string, bool) {
	v := s.req(m, parent, path, key)
	if v == nil {
		return "", false
	}
	return s.str(v, join(path, key))
}

func (s *src) optStr(m map[string]*yaml.Node, path, key string) (string, *yaml.Node) {
	v, ok := m[key]
	if !ok {
		return "", nil
	}
	str, _ := s.str(v, join(path, key))
	return str, v
}

func (s *src) boolean(m map[string]*yaml.Node, path, key string) bool {
	v, ok := m[key]
	if !ok {
		return false
	}
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
		s.errf(v, join(path, key), "want true or false, got %s", describe(v))
		return false
	}
	var b bool
	if err := v.Decode(&b); err != nil {
		s.errf(v, join(path, key), "want true or false")
	}
	return b
}

// duration reads a positive duration: Go syntax ("90s", "15m", "1h30m")
// or whole days ("30d").
func (s *src) duration(m map[string]*yaml.Node, path, key string) time.Duration {
	str, n := s.optStr(m, path, key)
	if n == nil || str == "" {
		return 0
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(str, "d"); ok {
		v, err := strconv.Atoi(days)
		if err != nil || v <= 0 || v > 36500 {
			s.errf(n, join(path, key), "%q is not a whole number of days", str)
			return 0
		}
		d = time.Duration(v) * 24 * time.Hour
	} else {
		var err error
		d, err = time.ParseDuration(str)
		if err != nil {
			s.errf(n, join(path, key), "%q is not a duration such as 15m, 12h or 30d", str)
			return 0
		}
	}
	if d <= 0 {
		s.errf(n, join(path, key), "must be positive")
		return 0
	}
	return d
}

type item struct {
	val  string
	node *yaml.Node
	path string
}

// strList reads a string or a list of strings.
func (s *src) strList(n *yaml.Node, path string) []item {
	if n.Kind == yaml.ScalarNode {
		v, ok := s.str(n, path)
		if !ok {
			return nil
		}
		return []item{{v, n, path}}
	}
	if n.Kind != yaml.SequenceNode {
		s.errf(n, path, "want a string or a list of strings, got %s", describe(n))
		return nil
	}
	if len(n.Content) == 0 {
		s.errf(n, path, "must not be empty")
		return nil
	}
	var out []item
	for i, c := range n.Content {
		p := index(path, i)
		if v, ok := s.str(c, p); ok {
			out = append(out, item{v, c, p})
		}
	}
	return out
}

type entry struct {
	key string
	item
}

// stringMap reads a mapping of strings to strings, in written order.
func (s *src) stringMap(n *yaml.Node, path string) []entry {
	if s.mapping(n, path) == nil {
		return nil
	}
	var out []entry
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i].Value, n.Content[i+1]
		if seen[k] {
			continue
		}
		seen[k] = true
		if str, ok := s.str(v, join(path, k)); ok {
			out = append(out, entry{k, item{str, v, join(path, k)}})
		}
	}
	return out
}

func (s *src) accessPolicy(name string, spec *yaml.Node) {
	m := s.mapping(spec, "spec", "route", "direction", "dataClass", "allow", "postureProfile", "when", "dryRun")
	if m == nil {
		return
	}
	r := Route{Name: name, Origin: s.origin(spec)}
	if v, n := s.optStr(m, "spec", "route"); n != nil {
		r.Name = v
		if v != "" && !routeRE.MatchString(v) {
			s.errf(n, "spec.route", "%q is not a valid route name (letters, digits, '.', '_' and '-')", v)
		}
	}
	switch v, n := s.optStr(m, "spec", "direction"); {
	case n == nil || v == "inbound":
	case v == "outbound":
		r.Direction = Outbound
	default:
		s.errf(n, "spec.direction", "want inbound or outbound, got %q", v)
	}
	if v, ok := s.reqStr(m, spec, "spec", "dataClass"); ok {
		if !dataClassRE.MatchString(v) {
			s.errf(m["dataClass"], "spec.dataClass", "%q is not a valid data class (lower case letters, digits, '.', '_' and '-')", v)
		}
		r.DataClass = v
	}
	if n := s.req(m, spec, "spec", "allow"); n != nil {
		for _, it := range s.strList(n, "spec.allow") {
			p, err := identity.ParsePattern(it.val)
			if err != nil {
				s.errf(it.node, it.path, "%s", strings.TrimPrefix(err.Error(), "posture: "))
				continue
			}
			r.Allow = append(r.Allow, p)
		}
	}
	if v, n := s.optStr(m, "spec", "postureProfile"); n != nil && v != "" {
		r.Profile = v
		if r.Direction == Outbound {
			s.errf(n, "spec.postureProfile", "outbound routes receive no posture token; set it on the inbound route")
		} else {
			s.later = append(s.later, func() {
				if _, ok := s.kinds[KindPostureProfile+"/"+v]; !ok {
					s.errf(n, "spec.postureProfile", "unknown PostureProfile %q", v)
				}
			})
		}
	}
	if v, n := s.optStr(m, "spec", "when"); n != nil && v != "" {
		s.condition(&r, v, n)
	}
	r.DryRun = s.boolean(m, "spec", "dryRun")
	key := routeKey{r.Direction, r.Name}
	if prev, dup := s.routes[key]; dup {
		s.errf(spec, "spec.route", "%s route %q already defined at %s", r.Direction, r.Name, prev)
		return
	}
	s.routes[key] = r.Origin
	s.p.Routes = append(s.p.Routes, r)
}

// condition compiles a route's when expression, reporting each problem
// CEL finds at the line it is on when the expression is a literal block
// ("when: |"), else at the field's line.
func (s *src) condition(r *Route, text string, n *yaml.Node) {
	c, issues := compileCondition(text)
	for _, is := range issues {
		line, msg := n.Line, is.msg
		switch {
		case is.line == 0:
		case n.Style&yaml.LiteralStyle != 0:
			line += is.line
			msg = fmt.Sprintf("column %d of the expression: %s", is.col, msg)
		case is.line == 1:
			msg = fmt.Sprintf("column %d of the expression: %s", is.col, msg)
		default:
			msg = fmt.Sprintf("line %d, column %d of the expression: %s", is.line, is.col, msg)
		}
		s.errs = append(s.errs, &FieldError{File: s.file, Line: line, Field: "spec.when", Msg: msg})
	}
	if c != nil {
		r.When, r.cond = strings.TrimSpace(text), c
	}
}

func (s *src) postureProfile(name string, spec *yaml.Node) {
	m := s.mapping(spec, "spec", "issuers", "minOSVersion", "requireDiskEncryption", "requireFirewall",
		"requireScreenLock", "edr", "maxPatchAge", "maxTokenAge")
	if m == nil {
		return
	}
	p := Profile{Name: name, Origin: s.origin(spec)}
	kids := map[string]string{}
	if n := s.req(m, spec, "spec", "issuers"); n != nil {
		if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
			s.errf(n, "spec.issuers", "want a non-empty list of issuers, got %s", describe(n))
		} else {
			for i, in := range n.Content {
				if iss, ok := s.issuer(in, index("spec.issuers", i), kids); ok {
					p.Issuers = append(p.Issuers, iss)
				}
			}
		}
	}
	if n, ok := m["minOSVersion"]; ok {
		p.MinOSVersion = map[string]string{}
		p.minOS = map[string][]int{}
		for _, e := range s.stringMap(n, "spec.minOSVersion") {
			k, it := e.key, e.item
			v, ok := parseVersion(it.val)
			if !ok {
				s.errf(it.node, it.path, "%q is not a dotted version such as 22.04", it.val)
				continue
			}
			os := strings.ToLower(k)
			if _, dup := p.MinOSVersion[os]; dup {
				s.errf(it.node, it.path, "OS %q given twice", os)
				continue
			}
			p.MinOSVersion[os] = it.val
			p.minOS[os] = v
		}
	}
	p.RequireDiskEncryption = s.boolean(m, "spec", "requireDiskEncryption")
	p.RequireFirewall = s.boolean(m, "spec", "requireFirewall")
	p.RequireScreenLock = s.boolean(m, "spec", "requireScreenLock")
	if n, ok := m["edr"]; ok {
		em := s.mapping(n, "spec.edr", "names", "maxHeartbeatAge")
		if em != nil {
			e := &EDRRequirement{}
			if nn, ok := em["names"]; ok {
				for _, it := range s.strList(nn, "spec.edr.names") {
					e.Names = append(e.Names, it.val)
				}
				slices.Sort(e.Names)
			}
			e.MaxHeartbeatAge = s.duration(em, "spec.edr", "maxHeartbeatAge")
			p.EDR = e
		}
	}
	p.MaxPatchAge = s.duration(m, "spec", "maxPatchAge")
	p.MaxTokenAge = s.duration(m, "spec", "maxTokenAge")
	if len(p.Issuers) > 0 {
		t, err := NewTrustedIssuers(p.Issuers...)
		if err != nil {
			s.errf(m["issuers"], "spec.issuers", "%v", err)
			return
		}
		p.trusted = t
	}
	s.p.Profiles = append(s.p.Profiles, p)
}

// issuer reads {name, jwks}. jwks is a JWK Set as a mapping or as JSON
// text; every key is checked where it is written.
func (s *src) issuer(n *yaml.Node, path string, kids map[string]string) (Issuer, bool) {
	m := s.mapping(n, path, "name", "jwks")
	if m == nil {
		return Issuer{}, false
	}
	iss := Issuer{}
	name, ok := s.reqStr(m, n, path, "name")
	iss.Name = name
	jn := s.req(m, n, path, "jwks")
	if jn == nil {
		return Issuer{}, false
	}
	jpath := join(path, "jwks")
	var raw any
	if jn.Kind == yaml.ScalarNode {
		if err := json.Unmarshal([]byte(jn.Value), &raw); err != nil {
			s.errf(jn, jpath, "not a JWK Set in JSON")
			return Issuer{}, false
		}
	} else if err := jn.Decode(&raw); err != nil {
		s.errf(jn, jpath, "not a JWK Set")
		return Issuer{}, false
	}
	set, _ := raw.(map[string]any)
	keys, _ := set["keys"].([]any)
	if len(keys) == 0 {
		s.errf(jn, join(jpath, "keys"), "want a non-empty list of keys")
		return Issuer{}, false
	}
	var keyNodes []*yaml.Node
	if jn.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(jn.Content); i += 2 {
			if jn.Content[i].Value == "keys" && jn.Content[i+1].Kind == yaml.SequenceNode {
				keyNodes = jn.Content[i+1].Content
			}
		}
	}
	for i, k := range keys {
		kpath := index(join(jpath, "keys"), i)
		at := jn
		if i < len(keyNodes) {
			at = keyNodes[i]
		}
		b, err := json.Marshal(k)
		if err != nil {
			s.errf(at, kpath, "not a JWK")
			ok = false
			continue
		}
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(b); err != nil {
			s.errf(at, kpath, "not a valid JWK: %s", strings.TrimPrefix(err.Error(), "go-jose/go-jose: "))
			ok = false
			continue
		}
		if _, err := checkJWK(jwk); err != nil {
			s.errf(at, kpath, "%v", err)
			ok = false
			continue
		}
		if prev, dup := kids[jwk.KeyID]; dup {
			s.errf(at, kpath, "kid %q already used by %s", jwk.KeyID, prev)
			ok = false
			continue
		}
		kids[jwk.KeyID] = kpath
		iss.JWKS.Keys = append(iss.JWKS.Keys, jwk)
	}
	return iss, ok
}

func (s *src) code(it item, wildcard bool) (string, bool) {
	if wildcard && it.val == Any {
		return it.val, true
	}
	if !codeRE.MatchString(it.val) {
		s.errf(it.node, it.path, "%q is not a jurisdiction code (upper case letters and digits, such as EU or US)", it.val)
		return "", false
	}
	return it.val, true
}

func (s *src) jurisdictions(spec *yaml.Node) {
	m := s.mapping(spec, "spec", "codes", "bindings")
	if m == nil {
		return
	}
	if n, ok := m["codes"]; ok {
		for _, it := range s.strList(n, "spec.codes") {
			if c, ok := s.code(it, false); ok {
				s.codes[c] = true
			}
		}
	}
	n, ok := m["bindings"]
	if !ok {
		return
	}
	if n.Kind != yaml.SequenceNode {
		s.errf(n, "spec.bindings", "want a list, got %s", describe(n))
		return
	}
	for i, bn := range n.Content {
		path := index("spec.bindings", i)
		bm := s.mapping(bn, path, "id", "jurisdiction")
		if bm == nil {
			continue
		}
		b := Binding{Origin: s.origin(bn)}
		okID, okCode := false, false
		if v, ok := s.reqStr(bm, bn, path, "id"); ok {
			p, err := identity.ParsePattern(v)
			if err != nil {
				s.errf(bm["id"], join(path, "id"), "%s", strings.TrimPrefix(err.Error(), "posture: "))
			} else if prev, dup := s.bindings[p.String()]; dup {
				s.errf(bm["id"], join(path, "id"), "%s already bound at %s", v, prev)
			} else {
				b.ID, okID = p, true
				s.bindings[p.String()] = b.Origin
			}
		}
		if v, ok := s.reqStr(bm, bn, path, "jurisdiction"); ok {
			at := item{v, bm["jurisdiction"], join(path, "jurisdiction")}
			if c, ok := s.code(at, false); ok {
				b.Jurisdiction, okCode = c, true
				s.later = append(s.later, func() {
					if !s.codes[c] {
						s.errf(at.node, at.path, "unknown jurisdiction %q (declare it in spec.codes)", c)
					}
				})
			}
		}
		if okID && okCode {
			s.p.Bindings = append(s.p.Bindings, b)
		}
	}
}

func (s *src) residencyRules(spec *yaml.Node) {
	m := s.mapping(spec, "spec", "rules")
	if m == nil {
		return
	}
	n := s.req(m, spec, "spec", "rules")
	if n == nil {
		return
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		s.errf(n, "spec.rules", "want a non-empty list of rules, got %s", describe(n))
		return
	}
	for i, rn := range n.Content {
		if r, ok := s.rule(rn, index("spec.rules", i)); ok {
			s.p.Rules = append(s.p.Rules, r)
		}
	}
}

func (s *src) codeSet(m map[string]*yaml.Node, parent *yaml.Node, path, key string) ([]string, bool) {
	n := s.req(m, parent, path, key)
	if n == nil {
		return nil, false
	}
	items := s.strList(n, join(path, key))
	if len(items) == 0 {
		return nil, false
	}
	ok := true
	var out []string
	for _, it := range items {
		c, good := s.code(it, true)
		if !good {
			ok = false
			continue
		}
		if c == Any && len(items) > 1 {
			s.errf(it.node, it.path, "\"*\" must stand alone")
			ok = false
			continue
		}
		if slices.Contains(out, c) {
			s.errf(it.node, it.path, "%q listed twice", c)
			ok = false
			continue
		}
		out = append(out, c)
		if c != Any {
			s.later = append(s.later, func() {
				if !s.codes[c] {
					s.errf(it.node, it.path, "unknown jurisdiction %q", c)
				}
			})
		}
	}
	slices.Sort(out)
	return out, ok
}

func (s *src) rule(n *yaml.Node, path string) (TransferRule, bool) {
	m := s.mapping(n, path, "dataClass", "from", "to", "action", "maskingProfile", "legalBasis")
	if m == nil {
		return TransferRule{}, false
	}
	r := TransferRule{Origin: s.origin(n), path: path}
	ok := true
	if cn := s.req(m, n, path, "dataClass"); cn != nil {
		items := s.strList(cn, join(path, "dataClass"))
		if len(items) == 0 {
			ok = false
		}
		for _, it := range items {
			switch {
			case it.val == Any && len(items) > 1:
				s.errf(it.node, it.path, "\"*\" must stand alone")
				ok = false
			case it.val != Any && !dataClassRE.MatchString(it.val):
				s.errf(it.node, it.path, "%q is not a valid data class", it.val)
				ok = false
			case slices.Contains(r.DataClasses, it.val):
				s.errf(it.node, it.path, "%q listed twice", it.val)
				ok = false
			default:
				r.DataClasses = append(r.DataClasses, it.val)
			}
		}
		slices.Sort(r.DataClasses)
	} else {
		ok = false
	}
	var good bool
	r.From, good = s.codeSet(m, n, path, "from")
	ok = ok && good
	r.To, good = s.codeSet(m, n, path, "to")
	ok = ok && good
	if v, good := s.reqStr(m, n, path, "action"); good {
		switch a := Action(v); a {
		case ActionAllow, ActionDeidentify, ActionDeny:
			r.Action = a
		default:
			s.errf(m["action"], join(path, "action"), "want allow, deidentify or deny, got %q", v)
			ok = false
		}
	} else {
		ok = false
	}
	mp, mpn := s.optStr(m, path, "maskingProfile")
	switch {
	case r.Action == ActionDeidentify && mpn == nil:
		s.errf(n, join(path, "maskingProfile"), "required when action is deidentify")
		ok = false
	case r.Action != ActionDeidentify && mpn != nil && r.Action != "":
		s.errf(mpn, join(path, "maskingProfile"), "only a deidentify rule names a masking profile")
		ok = false
	case mpn != nil && mp != "":
		r.MaskingProfile = mp
		s.later = append(s.later, func() {
			if _, ok := s.kinds[KindMaskingProfile+"/"+mp]; !ok {
				s.errf(mpn, join(path, "maskingProfile"), "unknown MaskingProfile %q", mp)
			}
		})
	}
	if ln, has := m["legalBasis"]; has {
		lpath := join(path, "legalBasis")
		if r.Action == ActionDeny {
			s.errf(ln, lpath, "a deny rule needs no legal basis")
			ok = false
		}
		lm := s.mapping(ln, lpath, "type", "reference", "expires")
		if lm == nil {
			return r, false
		}
		if v, good := s.reqStr(lm, ln, lpath, "type"); good {
			if !slices.Contains(LegalBasisTypes, v) {
				s.errf(lm["type"], join(lpath, "type"), "unknown legal basis type %q, want one of %s", v, strings.Join(LegalBasisTypes, ", "))
				ok = false
			}
			r.LegalBasis.Type = v
		} else {
			ok = false
		}
		if v, good := s.reqStr(lm, ln, lpath, "reference"); good {
			r.LegalBasis.Reference = v
		} else {
			ok = false
		}
		if v, en := s.optStr(lm, lpath, "expires"); en != nil && v != "" {
			t, err := parseExpiry(v)
			if err != nil {
				s.errf(en, join(lpath, "expires"), "%q is not a date (2030-01-31) or an RFC 3339 time", v)
				ok = false
			}
			r.LegalBasis.Expires = t
		}
	}
	return r, ok
}

// parseExpiry reads a date (the basis lapses at its start, UTC) or an RFC
// 3339 time.
func parseExpiry(v string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	return t.UTC(), err
}

func (s *src) maskingProfile(name string, spec *yaml.Node) {
	if spec.Kind != yaml.MappingNode {
		s.errf(spec, "spec", "want a mapping, got %s", describe(spec))
		return
	}
	m := s.mapping(spec, "spec")
	mp := MaskingProfile{Name: name, Origin: s.origin(spec)}
	if v, n := s.optStr(m, "spec", "reference"); n != nil {
		mp.Reference = v
	}
	var raw any
	if err := spec.Decode(&raw); err != nil {
		s.errf(spec, "spec", "cannot read: %v", err)
		return
	}
	b, err := json.Marshal(raw)
	if err != nil {
		s.errf(spec, "spec", "must be plain data with string keys")
		return
	}
	mp.Spec = b
	s.p.MaskingProfiles = append(s.p.MaskingProfiles, mp)
}

// checkOverlaps refuses rules of equal specificity that cover a common
// transfer, where neither would clearly apply.
func (l *loader) checkOverlaps() {
	rules := l.p.Rules
	for i := range rules {
		for j := i + 1; j < len(rules); j++ {
			a, b := &rules[i], &rules[j]
			if a.specificity() == b.specificity() && a.overlaps(b) {
				l.errs = append(l.errs, &FieldError{
					File: b.Origin.File, Line: b.Origin.Line, Field: b.path,
					Msg: fmt.Sprintf("overlaps the rule at %s and is as specific; name data classes or jurisdictions so one rule applies", a.Origin),
				})
			}
		}
	}
}
