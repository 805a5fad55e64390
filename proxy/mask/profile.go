package mask

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
)

// builtins holds the built-in profiles by name. It is filled by init
// functions through registerBuiltin and only read afterwards.
var builtins = struct {
	sync.RWMutex
	m map[string]*Profile
}{m: map[string]*Profile{}}

// registerBuiltin adds p to the built-in profiles. It is meant to be called
// from init functions of this package (hipaa.go, dicom_basic.go). It sets
// p.Version to the profile's content hash when it is empty, and panics on
// an empty or duplicate name: both are programming errors.
func registerBuiltin(p *Profile) {
	if p == nil || p.Name == "" {
		panic("mask: built-in profile without a name")
	}
	q := p.clone()
	if q.Version == "" {
		q.Version = contentVersion(q)
	}
	builtins.Lock()
	defer builtins.Unlock()
	if _, dup := builtins.m[q.Name]; dup {
		panic("mask: built-in profile " + q.Name + " registered twice")
	}
	builtins.m[q.Name] = q
}

// Builtin returns a copy of the built-in profile called name
// ("hipaa-safe-harbor", "dicom-basic"), and whether there is one. The copy
// is the caller's; changing it does not change the registry.
func Builtin(name string) (*Profile, bool) {
	builtins.RLock()
	p, ok := builtins.m[name]
	builtins.RUnlock()
	if !ok {
		return nil, false
	}
	return p.clone(), true
}

// BuiltinNames returns the names of the built-in profiles, sorted.
func BuiltinNames() []string {
	builtins.RLock()
	defer builtins.RUnlock()
	names := make([]string, 0, len(builtins.m))
	for n := range builtins.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (p *Profile) clone() *Profile {
	q := *p
	q.DICOM = append([]Rule(nil), p.DICOM...)
	q.HL7 = append([]Rule(nil), p.HL7...)
	q.FHIR = append([]Rule(nil), p.FHIR...)
	return &q
}

// contentVersion is a digest of everything in p but its version: two
// profiles with the same rules have the same version, whatever their
// history.
func contentVersion(p *Profile) string {
	q := *p
	q.Version = ""
	b, err := json.Marshal(&q)
	if err != nil {
		panic(fmt.Sprintf("mask: encode profile: %v", err))
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:12])
}
