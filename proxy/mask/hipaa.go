package mask

import (
	"strconv"
	"strings"

	"github.com/medgate/medgate/crypto/pseudonym"
)

// The hipaa-safe-harbor profile removes or transforms the 18 identifiers
// of 45 CFR 164.514(b)(2) where HL7 v2 and FHIR carry them:
//
//   - names, street addresses, cities, counties, phone and fax numbers,
//     e-mail and web addresses, social security, driver's licence and
//     other licence numbers, photos: removed (HL7: emptied, since field
//     positions carry meaning);
//   - medical record, account, health plan beneficiary, visit and order
//     numbers: keyed pseudonyms, so records of one patient stay linked on
//     the receiving side while the numbers cannot be looked up without the
//     project key (the same patient ID gives the same token as the DICOM
//     PatientID does);
//   - ZIP codes: their first three digits, "000" for the three-digit areas
//     of 20,000 people or fewer; states and countries are kept;
//   - every date of the patient (birth, death, admission, discharge,
//     service, observation, message time): the year only, and birth years
//     that show an age over 89 become the year of age 90.
//
// Segments and resources that hold only a person's data (PID, NK1, GT1,
// IN1, IN2, MRG, PD1, CON; Patient, RelatedPerson, Person) are masked as
// allow-lists: every field is emptied or removed unless the profile keeps
// it, so fields this table does not know about never leak. Custom Z
// segments are removed whole, as are free-text notes (NTE-3).
//
// Providers (attending, referring and ordering doctors, Practitioner
// resources, staff who entered a record) are not identifiers of the
// individual under safe harbor, which lists those of the patient and of
// relatives, employers and household members; they are kept. Free text in
// observation values (OBX-5) and clinical notes in resources is kept and
// not scanned for names: a route whose reports may name patients in prose
// needs a custom profile that removes them.
//
// Safe harbor strictly allows no code derived from an identifier; keyed
// pseudonyms are such codes made irreversible without the key. A
// deployment that must meet the letter of 164.514(b)(2) uses a custom
// profile with base "hipaa-safe-harbor" and "remove" for the pseudonymized
// fields.
func hipaaSafeHarbor() *Profile {
	p := &Profile{Name: HIPAASafeHarbor}
	p.HL7 = hipaaHL7()
	p.FHIR = hipaaFHIR()
	return p
}

func init() { registerBuiltin(hipaaSafeHarbor()) }

type rb []Rule

func (r *rb) add(action Action, value string, fields ...string) {
	for _, f := range fields {
		*r = append(*r, Rule{Field: f, Action: action, Value: value})
	}
}

func (r *rb) keep(seg string, fields ...int) {
	for _, f := range fields {
		*r = append(*r, Rule{Field: seg + "-" + strconv.Itoa(f), Action: Keep})
	}
}

// cx masks an extended composite ID (CX) field: the ID becomes a
// pseudonym of the given kind, its check digit goes, the identifier type
// and assigning authority stay.
func (r *rb) cx(field, kind string) {
	r.add(Empty, "", field)
	r.add(Pseudonym, kind, field+".1")
	r.add(Keep, "", field+".3", field+".4", field+".5")
}

// address masks an extended address (XAD) field: street, city and county
// go, the ZIP code is cut to three digits, state, country and address type
// stay.
func (r *rb) address(field string) {
	r.add(Empty, "", field)
	r.add(Keep, "", field+".4", field+".6", field+".7")
	r.add(Generalize, GeneralizeZIP, field+".5")
}

func hipaaHL7() []Rule {
	var r rb
	year := func(fields ...string) { r.add(Generalize, GeneralizeYear, fields...) }

	// Message header and event: the message time gives away the event's
	// date (an admission, a result).
	year("MSH-7", "EVN-2", "EVN-3", "EVN-6")

	// Patient identification, as an allow-list.
	r.add(Empty, "", "PID-*")
	r.keep("PID", 1, 8, 10, 15, 16, 17, 22, 24, 25, 26, 27, 28, 30, 31, 32, 34, 35, 36, 37, 38, 39)
	r.cx("PID-2", pseudonym.KindPatientID)
	r.cx("PID-3", pseudonym.KindPatientID)
	r.cx("PID-4", pseudonym.KindPatientID)
	r.add(Pseudonym, pseudonym.KindName, "PID-5")
	r.add(Generalize, GeneralizeBirthYear, "PID-7")
	r.address("PID-11")
	r.cx("PID-18", pseudonym.KindOther)
	year("PID-29", "PID-33")

	// Additional demographics: an allow-list; duplicate patient and place
	// of worship go.
	r.add(Empty, "", "PD1-*")
	r.keep("PD1", 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 15, 16, 19, 20, 21)
	year("PD1-13", "PD1-17", "PD1-18")

	// Merge: the prior identifiers of the patient.
	r.add(Empty, "", "MRG-*")
	r.cx("MRG-1", pseudonym.KindPatientID)
	r.cx("MRG-2", pseudonym.KindPatientID)
	r.cx("MRG-3", pseudonym.KindOther)
	r.cx("MRG-4", pseudonym.KindPatientID)
	r.cx("MRG-5", pseudonym.KindOther)
	r.cx("MRG-6", pseudonym.KindOther)
	r.add(Pseudonym, pseudonym.KindName, "MRG-7")

	// Next of kin, relatives and associated parties: only the relationship
	// and characteristics that identify no one stay.
	r.add(Empty, "", "NK1-*")
	r.keep("NK1", 1, 3, 7, 14, 15, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 34, 35, 36)
	year("NK1-8", "NK1-9")

	// Guarantor: often the patient or a relative.
	r.add(Empty, "", "GT1-*")
	r.keep("GT1", 1, 9, 10, 11, 15, 35, 36)
	r.cx("GT1-2", pseudonym.KindOther)
	r.add(Generalize, GeneralizeBirthYear, "GT1-8")
	r.address("GT1-5")
	year("GT1-13", "GT1-14")

	// Insurance: the plan and company stay; the insured person, their
	// employer and their numbers go.
	r.add(Empty, "", "IN1-*")
	r.keep("IN1", 1, 2, 3, 4, 5, 6, 7, 15, 17, 20, 21, 22, 23, 24, 27, 28, 30, 31, 32, 33, 34, 35, 38, 41, 43, 45, 46, 47, 48, 51)
	r.cx("IN1-8", pseudonym.KindOther)
	r.add(Generalize, GeneralizeBirthYear, "IN1-18")
	r.address("IN1-19")
	r.cx("IN1-36", pseudonym.KindOther)
	r.cx("IN1-49", pseudonym.KindPatientID)
	year("IN1-12", "IN1-13", "IN1-26", "IN1-29", "IN1-37", "IN1-44")
	r.add(Empty, "", "IN2-*")
	r.add(Empty, "", "IN3-*")
	r.keep("IN3", 1)

	// Consent: the consenters are persons.
	r.add(Empty, "", "CON-*")
	r.keep("CON", 1, 2, 3, 4)

	// Accident: date and place.
	r.add(Empty, "", "ACC-*")
	r.keep("ACC", 2, 4, 5, 6)
	year("ACC-1")

	// Visits: numbers become pseudonyms, dates their year; locations and
	// providers stay.
	r.cx("PV1-19", pseudonym.KindOther)
	r.cx("PV1-50", pseudonym.KindOther)
	year("PV1-44", "PV1-45")
	year("PV2-8", "PV2-9", "PV2-26", "PV2-33")

	// Orders, results and specimens: order and accession numbers become
	// pseudonyms (the kind DICOM's AccessionNumber uses), dates of service
	// their year.
	for _, f := range []string{"ORC-2", "ORC-3", "ORC-4", "OBR-2", "OBR-3", "OBR-18"} {
		r.add(Empty, "", f)
		r.add(Pseudonym, pseudonym.KindAccession, f+".1")
		r.add(Keep, "", f+".2", f+".3", f+".4")
	}
	r.add(Empty, "", "OBR-19", "OBR-20", "OBR-21")
	year("ORC-7.4", "ORC-7.5", "ORC-9", "ORC-15", "ORC-27")
	year("OBR-6", "OBR-7", "OBR-8", "OBR-14", "OBR-22", "OBR-27.4", "OBR-27.5", "OBR-36")
	year("OBX-14", "OBX-19")
	year("TQ1-7", "TQ1-8")
	r.add(Empty, "", "SPM-2", "SPM-3")
	r.add(Pseudonym, pseudonym.KindAccession, "SPM-2.1.1", "SPM-2.2.1", "SPM-3.1.1", "SPM-3.2.1")
	year("SPM-17", "SPM-18")
	year("AL1-6", "DG1-5", "DG1-19", "PR1-5")
	year("TXA-4", "TXA-6", "TXA-7", "TXA-8")
	r.add(Empty, "", "TXA-12")
	r.add(Pseudonym, pseudonym.KindAccession, "TXA-12.1")
	year("ROL-5", "ROL-6")

	// Free text and site-specific segments.
	r.add(Empty, "", "NTE-3")
	r.add(Remove, "", "Z*")
	return r
}

func hipaaFHIR() []Rule {
	var r rb
	// People of the record, as allow-lists: everything not kept goes.
	for _, t := range []string{"Patient", "RelatedPerson", "Person"} {
		r.add(Remove, "", t+".*")
		r.add(Keep, "", t+".meta", t+".active", t+".gender", t+".maritalStatus",
			t+".multipleBirthBoolean", t+".communication", t+".generalPractitioner",
			t+".managingOrganization", t+".link", t+".patient", t+".relationship")
		r.add(Pseudonym, pseudonym.KindOther, t+".id")
		r.add(Keep, "", t+".identifier")
		r.add(Pseudonym, pseudonym.KindPatientID, t+".identifier.value")
		r.add(Remove, "", t+".identifier.period", t+".identifier.assigner.display")
		r.add(Keep, "", t+".address")
		r.add(Remove, "", t+".address.*")
		r.add(Keep, "", t+".address.use", t+".address.type", t+".address.state", t+".address.country")
		r.add(Generalize, GeneralizeZIP, t+".address.postalCode")
		r.add(Generalize, GeneralizeBirthYear, t+".birthDate")
		r.add(Generalize, GeneralizeYear, t+".deceasedDateTime")
		r.add(Keep, "", t+".deceasedBoolean")
		r.add(Keep, "", t+".contact")
		r.add(Remove, "", t+".contact.*")
		r.add(Keep, "", t+".contact.relationship", t+".contact.gender", t+".contact.organization")
	}
	r.add(Remove, "", "Patient.link.other.display", "Person.link.target.display", "RelatedPerson.patient.display")

	// Narratives repeat names and addresses in prose; search links repeat
	// the search's parameters; diagnostics may quote what was sought.
	r.add(Remove, "", "*.text", "Bundle.link", "OperationOutcome.issue.diagnostics")

	// Display strings of references to people repeat their names.
	r.add(Remove, "", "*.subject.display", "*.patient.display", "*.beneficiary.display",
		"*.policyHolder.display", "*.subscriber.display")

	// Dates of service: their year. Instants cannot hold a bare year, so
	// issued times go.
	year := func(fields ...string) { r.add(Generalize, GeneralizeYear, fields...) }
	year("Encounter.period.start", "Encounter.period.end",
		"Observation.effectiveDateTime", "Observation.effectivePeriod.start", "Observation.effectivePeriod.end",
		"DiagnosticReport.effectiveDateTime", "DiagnosticReport.effectivePeriod.start", "DiagnosticReport.effectivePeriod.end",
		"Condition.onsetDateTime", "Condition.abatementDateTime", "Condition.recordedDate",
		"Procedure.performedDateTime", "Procedure.performedPeriod.start", "Procedure.performedPeriod.end",
		"MedicationRequest.authoredOn", "MedicationStatement.effectiveDateTime", "MedicationAdministration.effectiveDateTime",
		"Immunization.occurrenceDateTime", "AllergyIntolerance.onsetDateTime", "AllergyIntolerance.recordedDate",
		"ImagingStudy.started", "ImagingStudy.series.started", "ServiceRequest.authoredOn", "ServiceRequest.occurrenceDateTime",
		"Specimen.receivedTime", "Specimen.collection.collectedDateTime", "Composition.date", "DocumentReference.date",
		"Coverage.period.start", "Coverage.period.end", "EpisodeOfCare.period.start", "EpisodeOfCare.period.end")
	r.add(Remove, "", "Observation.effectiveInstant", "Observation.issued", "DiagnosticReport.issued", "ImagingStudy.series.instance.title")

	// Identifiers of records of the patient: pseudonyms.
	for _, t := range []string{"Encounter", "ServiceRequest", "DiagnosticReport", "ImagingStudy", "Specimen", "Coverage", "Account", "EpisodeOfCare", "Claim"} {
		r.add(Pseudonym, pseudonym.KindAccession, t+".identifier.value")
	}
	r.add(Pseudonym, pseudonym.KindOther, "Coverage.subscriberId")
	r.add(UIDRemap, "", "ImagingStudy.series.uid", "ImagingStudy.series.instance.uid")
	return r
}

// restrictedZIP3 are the three-digit ZIP areas with 20,000 people or fewer
// (2000 census, as HHS's guidance lists them): safe harbor replaces them
// with 000.
var restrictedZIP3 = map[string]bool{
	"036": true, "059": true, "063": true, "102": true, "203": true, "556": true,
	"692": true, "790": true, "821": true, "823": true, "830": true, "831": true,
	"878": true, "879": true, "884": true, "890": true, "893": true,
}

// GeneralizeValue generalizes v as a value of kind (GeneralizeYear,
// GeneralizeBirthYear, GeneralizeZIP, GeneralizeAge, or "" to guess from
// its form): a date (HL7 YYYYMMDD[HHMM...] or FHIR YYYY-MM-DD[Thh...])
// becomes its year; a birth date its year, but no more than 90 years
// before refYear; a US ZIP code its first three digits, or "000" for a
// restricted area; an age in years the start of its ten-year band, and 90
// for 90 and over. It reports false, and the caller drops the value, when
// v is not of the kind: a value that cannot be generalized safely does not
// pass.
func GeneralizeValue(kind, v string, refYear int) (string, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", true
	}
	if kind == "" {
		kind = guessKind(v)
	}
	switch kind {
	case GeneralizeYear:
		return dateYear(v)
	case GeneralizeBirthYear:
		y, ok := dateYear(v)
		if !ok {
			return "", false
		}
		if n, _ := strconv.Atoi(y); refYear > 0 && refYear-n > 89 {
			return strconv.Itoa(refYear - 90), true
		}
		return y, true
	case GeneralizeZIP:
		return zip3(v)
	case GeneralizeAge:
		return ageBand(v)
	}
	return "", false
}

func guessKind(v string) string {
	d := leadingDigits(v)
	switch {
	case d == 4 && len(v) > 4 && v[4] == '-' && len(v) >= 7 && isDigit(v[5]):
		return GeneralizeYear // FHIR date
	case d == 5 && (len(v) == 5 || len(v) == 10 && v[5] == '-'), d == 9 && len(v) == 9:
		return GeneralizeZIP
	case d >= 1 && d <= 3:
		return GeneralizeAge
	case d >= 4:
		return GeneralizeYear
	}
	return ""
}

func leadingDigits(v string) int {
	n := 0
	for n < len(v) && isDigit(v[n]) {
		n++
	}
	return n
}

func dateYear(v string) (string, bool) {
	d := leadingDigits(v)
	if d < 4 {
		return "", false
	}
	switch {
	case d == 4 && (len(v) == 4 || v[4] == '-'): // FHIR, or a bare year
	case d == 6 || d == 8 || d == 10 || d == 12 || d >= 14: // HL7 DT, DTM
	default:
		return "", false
	}
	y := v[:4]
	if y == "0000" {
		return "", false
	}
	return y, true
}

func zip3(v string) (string, bool) {
	d := leadingDigits(v)
	ok := d == 5 && (len(v) == 5 || len(v) == 10 && v[5] == '-' && leadingDigits(v[6:]) == 4) ||
		d == 9 && len(v) == 9
	if !ok {
		return "", false
	}
	if restrictedZIP3[v[:3]] {
		return "000", true
	}
	return v[:3], true
}

func ageBand(v string) (string, bool) {
	d := leadingDigits(v)
	unit := v[d:]
	if d == 0 || d > 3 || unit != "" && unit != "Y" && unit != "y" && unit != "a" {
		return "", false
	}
	n, _ := strconv.Atoi(v[:d])
	band := min(n/10*10, 90)
	s := strconv.Itoa(band)
	if d > len(s) {
		s = strings.Repeat("0", d-len(s)) + s
	}
	return s + unit, true
}
