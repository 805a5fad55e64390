// Package mask defines masking profiles: which fields of DICOM, HL7 v2 and
// FHIR data are removed, emptied, replaced, pseudonymized, date-shifted,
// remapped, generalized or kept when data may leave its jurisdiction only
// de-identified. The protocol codecs (proxy/dicom, proxy/hl7, proxy/httpx)
// apply a Profile to the data as it streams through them.
//
// Profiles come built in (dicom-basic, the DICOM PS3.15 Annex E Basic
// Application Level Confidentiality Profile; hipaa-safe-harbor, the 18
// identifiers of 45 CFR 164.514(b)(2) where HL7 v2 and FHIR carry them) or
// from policy (MaskingProfile documents). A Profile is immutable once
// built and safe for concurrent use.
package mask

import (
	"github.com/medgate/medgate/crypto/pseudonym"
)

// Action is what happens to a field.
type Action string

// Actions. The letters are the PS3.15 Annex E action codes each one
// implements for DICOM.
const (
	Remove     Action = "remove"     // X: the field is removed
	Empty      Action = "empty"      // Z: the field stays, with an empty (or zero-length) value
	Replace    Action = "replace"    // D: the field gets a dummy value (Rule.Value, or one valid for its type)
	Pseudonym  Action = "pseudonym"  // keyed pseudonym: the same input gives the same token everywhere
	DateShift  Action = "dateshift"  // dates move by the patient's keyed shift, intervals kept
	UIDRemap   Action = "uid"        // U: keyed, consistent UID remap under 2.25
	Generalize Action = "generalize" // ages to bands, ZIP codes to their first three digits
	Keep       Action = "keep"       // K: the field is kept
)

// Actions lists every action, for validation.
var Actions = []Action{Remove, Empty, Replace, Pseudonym, DateShift, UIDRemap, Generalize, Keep}

// Rule applies Action to the fields Field selects. Field is protocol
// specific: a DICOM tag "(0010,0010)" or keyword "PatientName"; an HL7 v2
// path "PID-5", "PID-5.1" or "NK1-*"; a FHIR path "Patient.name".
type Rule struct {
	Field  string `json:"field"`
	Action Action `json:"action"`
	// Value is the replacement for Replace; empty means a dummy value valid
	// for the field's type.
	Value string `json:"value,omitempty"`
}

// DICOMOptions are the PS3.15 Annex E options of the basic profile.
type DICOMOptions struct {
	RetainLongitudinalModifiedDates bool `json:"retainLongitudinalModifiedDates,omitempty"`
	RetainPatientCharacteristics    bool `json:"retainPatientCharacteristics,omitempty"`
	RetainDeviceIdentity            bool `json:"retainDeviceIdentity,omitempty"`
	CleanDescriptors                bool `json:"cleanDescriptors,omitempty"`
}

// Profile is a masking profile.
type Profile struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// DICOM rules apply on top of the basic profile when DICOMBasic is
	// set, and alone otherwise.
	DICOMBasic   bool         `json:"dicomBasic,omitempty"`
	DICOMOptions DICOMOptions `json:"dicomOptions,omitzero"`
	DICOM        []Rule       `json:"dicom,omitempty"`
	HL7          []Rule       `json:"hl7,omitempty"`
	FHIR         []Rule       `json:"fhir,omitempty"`
}

// Env is what applying a profile needs besides the profile.
type Env struct {
	// Keyer makes pseudonyms, date shifts and UID remaps under the
	// project key. Required for those actions.
	Keyer *pseudonym.Keyer
}
