package posture

import (
	"github.com/medgate/medgate/identity"

	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// APIVersion is the apiVersion every policy document carries.
const APIVersion = "medgate.io/v1"

// The kinds of policy document.
const (
	KindAccessPolicy   = "AccessPolicy"
	KindPostureProfile = "PostureProfile"
	KindJurisdictions  = "Jurisdictions"
	KindResidencyRules = "ResidencyRules"
	KindMaskingProfile = "MaskingProfile"
)

// Any is the wildcard a residency rule uses for "every data class" or
// "every jurisdiction".
const Any = "*"

// Policy is a compiled, validated policy: everything a sidecar needs to
// decide. It comes from Parse or LoadFiles and is immutable afterwards:
// never modify a Policy or anything it holds, since an Engine and its
// cache rely on Version describing it. A *Policy is safe for concurrent
// use.
//
// The exported fields are the policy's whole content, sorted, so a control
// plane can serve the same data; Canonical and Version are derived from
// them and from nothing else (not file names, comments or document order).
type Policy struct {
	// Version is a short hex content hash of the canonical form.
	Version string `json:"-"`

	Routes          []Route          `json:"routes"`
	Profiles        []Profile        `json:"profiles"`
	Jurisdictions   []string         `json:"jurisdictions"`
	Bindings        []Binding        `json:"bindings"`
	Rules           []TransferRule   `json:"rules"`
	MaskingProfiles []MaskingProfile `json:"masking_profiles"`

	canonical []byte
	digest    [32]byte
	routes    map[routeKey]*Route
	profiles  map[string]*Profile
	masks     map[string]*MaskingProfile
	// rules sorted by descending specificity
	ordered []*TransferRule
}

type routeKey struct {
	dir  Direction
	name string
}

// Origin says where a policy element was written. It is not part of the
// policy's content or version.
type Origin struct {
	File string `json:"-"`
	Line int    `json:"-"`
}

func (o Origin) String() string {
	return o.File + ":" + strconv.Itoa(o.Line)
}

// Route is an AccessPolicy: who may use one route, with which posture, and
// the class of the data it carries.
type Route struct {
	Name      string    `json:"name"`
	Direction Direction `json:"direction"`
	// DataClass is the class of data the route carries ("imaging",
	// "records", "phi", ...); residency rules select on it.
	DataClass string `json:"data_class"`
	// Allow lists the peer IDs admitted: for an inbound route the clients,
	// for an outbound route the servers this sidecar may send to.
	Allow []identity.Pattern `json:"allow"`
	// Profile names the PostureProfile a peer's token must satisfy; empty
	// means no posture token is required. Inbound routes only.
	Profile string `json:"posture_profile,omitempty"`
	// When is a CEL expression that must evaluate to true for the route
	// to admit; empty means no condition. A false result denies with
	// ReasonConditionFalse, an evaluation error with ReasonConditionError.
	// The package documentation lists the variables it may use.
	When string `json:"when,omitempty"`
	// DryRun makes the route decide and record without enforcing: a
	// denial still admits the session, as Decision.Enforced describes,
	// and the decision says so with its DryRun field.
	DryRun bool   `json:"dry_run,omitempty"`
	Origin Origin `json:"-"`

	// cond is When compiled, nil without a condition.
	cond *condition
}

// Allows reports whether id matches one of the route's patterns.
func (r *Route) Allows(id spiffeid.ID) bool {
	for _, p := range r.Allow {
		if p.Match(id) {
			return true
		}
	}
	return false
}

// EDRRequirement says which EDR agent must run and how fresh its heartbeat
// must be.
type EDRRequirement struct {
	// Names, when set, lists the accepted agents (compared with the
	// token's edr.name, case-insensitively); empty accepts any.
	Names []string `json:"names,omitempty"`
	// MaxHeartbeatAge bounds the age of edr.last_heartbeat; zero means not
	// checked.
	MaxHeartbeatAge time.Duration `json:"max_heartbeat_age,omitempty"`
}

// Profile is a PostureProfile: the trusted issuers and the device
// requirements. Zero-valued requirements are not checked.
type Profile struct {
	Name    string   `json:"name"`
	Issuers []Issuer `json:"issuers"`
	// MinOSVersion maps an OS name (os-release ID, lower case) to its
	// minimum version. When set, a device whose OS it does not name is
	// denied with ReasonOSUnsupported.
	MinOSVersion          map[string]string `json:"min_os_version,omitempty"`
	RequireDiskEncryption bool              `json:"require_disk_encryption,omitempty"`
	RequireFirewall       bool              `json:"require_firewall,omitempty"`
	RequireScreenLock     bool              `json:"require_screen_lock,omitempty"`
	// EDR, when non-nil, requires a running EDR agent.
	EDR *EDRRequirement `json:"edr,omitempty"`
	// MaxPatchAge bounds the age of last_patch.
	MaxPatchAge time.Duration `json:"max_patch_age,omitempty"`
	// MaxTokenAge bounds the age of iat, whatever exp says.
	MaxTokenAge time.Duration `json:"max_token_age,omitempty"`
	Origin      Origin        `json:"-"`

	trusted *TrustedIssuers
	minOS   map[string][]int
}

// Trusted returns the profile's issuers compiled for Verify.
func (p *Profile) Trusted() *TrustedIssuers { return p.trusted }

// Check applies the profile's requirements to claims that Verify accepted.
// It returns every failed requirement, and the earliest time at which a
// requirement that passed now stops passing (zero when none will).
func (p *Profile) Check(c *Claims, now time.Time) (reasons []Reason, until time.Time) {
	add := func(r Reason) {
		if !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	limit := func(t time.Time) {
		if until.IsZero() || t.Before(until) {
			until = t
		}
	}
	// window checks that at is within age of now: missing is a failure
	// of its own, an old time is r.
	window := func(at time.Time, age time.Duration, r Reason) {
		if at.IsZero() {
			add(ReasonClaimMissing)
			return
		}
		end := at.Add(age)
		if !now.Before(end) {
			add(r)
			return
		}
		limit(end)
	}
	if p.MaxTokenAge > 0 {
		window(c.IssuedAt, p.MaxTokenAge, ReasonTokenTooOld)
	}
	if len(p.minOS) > 0 {
		switch {
		case c.OS == nil:
			add(ReasonClaimMissing)
		default:
			min, ok := p.minOS[strings.ToLower(c.OS.Name)]
			if !ok {
				add(ReasonOSUnsupported)
				break
			}
			v, ok := parseVersion(c.OS.Version)
			if !ok || compareVersions(v, min) < 0 {
				add(ReasonOSTooOld)
			}
		}
	}
	flag := func(require bool, v *bool, r Reason) {
		switch {
		case !require:
		case v == nil:
			add(ReasonClaimMissing)
		case !*v:
			add(r)
		}
	}
	flag(p.RequireDiskEncryption, c.DiskEncrypted, ReasonDiskNotEncrypted)
	flag(p.RequireFirewall, c.Firewall, ReasonFirewallOff)
	flag(p.RequireScreenLock, c.ScreenLock, ReasonScreenLockOff)
	if p.EDR != nil {
		switch {
		case c.EDR == nil:
			add(ReasonClaimMissing)
		case !c.EDR.Running:
			add(ReasonEDRNotRunning)
		case len(p.EDR.Names) > 0 && !slices.ContainsFunc(p.EDR.Names, func(n string) bool { return strings.EqualFold(n, c.EDR.Name) }):
			add(ReasonEDRNotRunning)
		case p.EDR.MaxHeartbeatAge > 0:
			window(c.EDR.LastHeartbeat, p.EDR.MaxHeartbeatAge, ReasonEDRStale)
		}
	}
	if p.MaxPatchAge > 0 {
		window(c.LastPatch, p.MaxPatchAge, ReasonPatchTooOld)
	}
	return reasons, until
}

// Binding maps the identities an identity.Pattern matches to a jurisdiction.
// When several bindings match an ID the most specific decides: an exact
// ID, then the longest path prefix, then the trust domain.
type Binding struct {
	ID           identity.Pattern `json:"id"`
	Jurisdiction string           `json:"jurisdiction"`
	Origin       Origin           `json:"-"`
}

// Action is what a residency rule does with data it covers.
type Action string

const (
	ActionAllow      Action = "allow"
	ActionDeidentify Action = "deidentify"
	ActionDeny       Action = "deny"
)

// LegalBasis records why a transfer is lawful. Type is one of
// LegalBasisTypes; Reference names the instrument (a decision's number, a
// contract's ID); Expires, when set, is the instant the basis lapses.
type LegalBasis struct {
	Type      string    `json:"type,omitempty"`
	Reference string    `json:"reference,omitempty"`
	Expires   time.Time `json:"expires,omitzero"`
}

// IsZero reports whether no legal basis is recorded.
func (b LegalBasis) IsZero() bool { return b.Type == "" }

// LegalBasisTypes are the legal basis types a residency rule may name.
var LegalBasisTypes = []string{
	"adequacy",               // GDPR Art. 45 adequacy decision
	"scc",                    // GDPR Art. 46 standard contractual clauses
	"bcr",                    // GDPR Art. 47 binding corporate rules
	"derogation",             // GDPR Art. 49
	"dta",                    // a data transfer / data use agreement
	"baa",                    // HIPAA business associate agreement
	"pipl-assessment",        // PIPL Art. 38(1) CAC security assessment
	"pipl-standard-contract", // PIPL Art. 38(3) standard contract
	"pipl-certification",     // PIPL Art. 38(2) certification
	"consent",                // explicit consent recorded elsewhere
	"other",
}

// TransferRule is one residency rule: data of the classes DataClasses
// going from a jurisdiction in From to one in To gets Action. Each list is
// either [Any] or codes.
//
// Among the rules that cover a transfer the most specific one applies: a
// rule naming the data class beats one with Any, then one naming the
// destination, then one naming the origin. Validation refuses two rules
// of equal specificity that overlap, so the choice is never ambiguous.
// A rule whose legal basis has expired is passed over (the decision then
// carries ReasonLegalBasisExpired) and the next most specific applies.
type TransferRule struct {
	DataClasses []string `json:"data_classes"`
	From        []string `json:"from"`
	To          []string `json:"to"`
	Action      Action   `json:"action"`
	// MaskingProfile names the MaskingProfile to apply; deidentify only.
	MaskingProfile string     `json:"masking_profile,omitempty"`
	LegalBasis     LegalBasis `json:"legal_basis,omitzero"`
	Origin         Origin     `json:"-"`

	path string
}

func setCovers(set []string, v string) bool {
	return (len(set) == 1 && set[0] == Any) || slices.Contains(set, v)
}

func setExact(set []string) bool { return !(len(set) == 1 && set[0] == Any) }

func setsOverlap(a, b []string) bool {
	if !setExact(a) || !setExact(b) {
		return true
	}
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// Covers reports whether the rule covers the transfer.
func (r *TransferRule) Covers(class, from, to string) bool {
	return setCovers(r.DataClasses, class) && setCovers(r.From, from) && setCovers(r.To, to)
}

func (r *TransferRule) specificity() int {
	s := 0
	if setExact(r.DataClasses) {
		s += 4
	}
	if setExact(r.To) {
		s += 2
	}
	if setExact(r.From) {
		s++
	}
	return s
}

func (r *TransferRule) overlaps(o *TransferRule) bool {
	return setsOverlap(r.DataClasses, o.DataClasses) && setsOverlap(r.From, o.From) && setsOverlap(r.To, o.To)
}

// expired reports whether the rule's legal basis has lapsed at now.
func (r *TransferRule) expired(now time.Time) bool {
	return !r.LegalBasis.Expires.IsZero() && !now.Before(r.LegalBasis.Expires)
}

// MaskingProfile names a masking profile. Its spec is kept as it was
// written (as canonical JSON) for the masking engine to interpret.
type MaskingProfile struct {
	Name      string          `json:"name"`
	Reference string          `json:"reference,omitempty"`
	Spec      json.RawMessage `json:"spec"`
	Origin    Origin          `json:"-"`
}

// Route returns the route of that name and direction.
func (p *Policy) Route(dir Direction, name string) (*Route, bool) {
	r, ok := p.routes[routeKey{dir, name}]
	return r, ok
}

// Profile returns the posture profile of that name.
func (p *Policy) Profile(name string) (*Profile, bool) {
	r, ok := p.profiles[name]
	return r, ok
}

// MaskingProfile returns the masking profile of that name.
func (p *Policy) MaskingProfile(name string) (*MaskingProfile, bool) {
	r, ok := p.masks[name]
	return r, ok
}

// Jurisdiction returns the jurisdiction policy binds id to, by the most
// specific binding that matches. It never consults anything the peer says.
func (p *Policy) Jurisdiction(id spiffeid.ID) (string, bool) {
	best, code := -1, ""
	for i := range p.Bindings {
		b := &p.Bindings[i]
		if s := b.ID.Specificity(); s > best && b.ID.Match(id) {
			best, code = s, b.Jurisdiction
		}
	}
	return code, best >= 0
}

// Transfer returns the residency rule that applies to data of class going
// from one jurisdiction to another at now, or nil when none does; and the
// most specific rule passed over because its legal basis had expired, or
// nil.
func (p *Policy) Transfer(class, from, to string, now time.Time) (rule, lapsed *TransferRule) {
	for _, r := range p.ordered {
		if !r.Covers(class, from, to) {
			continue
		}
		if r.Action != ActionDeny && r.expired(now) {
			if lapsed == nil {
				lapsed = r
			}
			continue
		}
		return r, lapsed
	}
	return nil, lapsed
}

// Canonical returns the policy's canonical JSON form, from which Version
// is derived. Do not modify the returned bytes.
func (p *Policy) Canonical() []byte { return p.canonical }

// finish sorts the content, builds the indexes and computes the version.
func (p *Policy) finish() error {
	slices.SortFunc(p.Routes, func(a, b Route) int {
		if a.Direction != b.Direction {
			return int(a.Direction) - int(b.Direction)
		}
		return strings.Compare(a.Name, b.Name)
	})
	slices.SortFunc(p.Profiles, func(a, b Profile) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(p.MaskingProfiles, func(a, b MaskingProfile) int { return strings.Compare(a.Name, b.Name) })
	slices.Sort(p.Jurisdictions)
	slices.SortFunc(p.Bindings, func(a, b Binding) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	slices.SortStableFunc(p.Rules, func(a, b TransferRule) int {
		ka, _ := json.Marshal(a)
		kb, _ := json.Marshal(b)
		return strings.Compare(string(ka), string(kb))
	})

	p.routes = make(map[routeKey]*Route, len(p.Routes))
	for i := range p.Routes {
		r := &p.Routes[i]
		slices.SortFunc(r.Allow, func(a, b identity.Pattern) int { return strings.Compare(a.String(), b.String()) })
		p.routes[routeKey{r.Direction, r.Name}] = r
	}
	p.profiles = make(map[string]*Profile, len(p.Profiles))
	for i := range p.Profiles {
		p.profiles[p.Profiles[i].Name] = &p.Profiles[i]
	}
	p.masks = make(map[string]*MaskingProfile, len(p.MaskingProfiles))
	for i := range p.MaskingProfiles {
		p.masks[p.MaskingProfiles[i].Name] = &p.MaskingProfiles[i]
	}
	p.ordered = make([]*TransferRule, len(p.Rules))
	for i := range p.Rules {
		p.ordered[i] = &p.Rules[i]
	}
	slices.SortStableFunc(p.ordered, func(a, b *TransferRule) int { return b.specificity() - a.specificity() })

	body, err := json.Marshal(struct {
		APIVersion string `json:"api_version"`
		*Policy
	}{APIVersion, p})
	if err != nil {
		return err
	}
	p.canonical = body
	p.digest = sha256.Sum256(body)
	p.Version = hex.EncodeToString(p.digest[:8])
	return nil
}

// parseVersion reads a dotted version ("22.04", "10.0.19045", "9") into
// its numeric components. Each component must start with a digit; what
// follows the digits ("2-rc1") is ignored.
func parseVersion(s string) ([]int, bool) {
	if s == "" || len(s) > 64 {
		return nil, false
	}
	parts := strings.Split(s, ".")
	if len(parts) > 8 {
		return nil, false
	}
	out := make([]int, len(parts))
	for i, part := range parts {
		n := 0
		for n < len(part) && part[n] >= '0' && part[n] <= '9' {
			n++
		}
		if n == 0 || n > 9 {
			return nil, false
		}
		v, err := strconv.Atoi(part[:n])
		if err != nil {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}

// compareVersions compares component by component; missing components
// count as zero, so "9" equals "9.0".
func compareVersions(a, b []int) int {
	for i := range max(len(a), len(b)) {
		var x, y int
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}
