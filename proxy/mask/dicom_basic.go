package mask

import (
	"strings"

	"github.com/medgate/medgate/crypto/pseudonym"
)

// Clean is the PS3.15 Annex E action "C": the value is replaced by one of
// similar meaning known not to identify the patient. For DICOM, free
// text keeps its words except those of the patient's own name and ID,
// which are blanked; a sequence keeps its items, each cleaned by the
// profile; anything else is kept. When the codec cannot know the patient
// (the name and ID come too late in the stream), cleaned text is removed.
const Clean Action = "clean"

// DICOMPrivateTags is the Field of a DICOM rule that applies to every
// private attribute (odd group number).
const DICOMPrivateTags = "private"

// DICOMBasic is the name of the built-in DICOM profile.
const DICOMBasic = "dicom-basic"

// DICOMBasicVersion is the version of the built-in dicom-basic profile:
// it changes whenever its table or the way its codes resolve does.
const DICOMBasicVersion = "ps3.15-e1-1/1"

// The built-in dicom-basic profile is PS3.15 Annex E, the Basic
// Application Level Confidentiality Profile, without options; a custom
// profile based on it may turn options on. Its rules are not listed in
// Profile.DICOM: the DICOM codec applies DICOMBasicRules(DICOMOptions)
// to every profile with DICOMBasic set, then the profile's own rules.
func init() {
	registerBuiltin(&Profile{Name: DICOMBasic, Version: DICOMBasicVersion, DICOMBasic: true})
}

// DICOMBasicAttribute is one row of PS3.15 Table E.1-1.
type DICOMBasicAttribute struct {
	// Field is the tag, "(gggg,eeee)", with x for the digits of a
	// repeating group: "(60xx,3000)".
	Field   string
	Keyword string
	VR      string
	// Basic is the basic profile's action code: X, Z, D, U, K, C or a
	// combination such as X/Z/D.
	Basic string
	// Options lists the option columns that name an action, as
	// "<option>:<code>": L retain longitudinal temporal information with
	// modified dates, P retain patient characteristics, V retain device
	// identity, D clean descriptors.
	Options string
}

// DICOMBasicTable returns Table E.1-1, one row per attribute. Private
// attributes (X in the basic profile) are not a row: see
// DICOMBasicRules.
func DICOMBasicTable() []DICOMBasicAttribute {
	return append([]DICOMBasicAttribute(nil), basicTable...)
}

// DICOMBasicRules returns the rules of the basic profile with opts
// applied: one rule per row of Table E.1-1, its action code resolved to
// one concrete Action, and a rule removing private attributes.
//
// Combined codes resolve to the choice that keeps every IOD conformant
// without knowing the IOD: X/Z to Empty, X/D, Z/D and X/Z/D to Replace
// (a dummy value), X/Z/U* to UIDRemap (the sequence is kept and the
// instance UIDs in it remapped). An option's code overrides the basic
// one: K keeps; C cleans (Clean), except that with modified dates a DA
// or DT value is date-shifted, a TM value is kept (a whole-day shift
// leaves times of day as they were) and the time zone offset is removed.
// Patient ID, Z in the table, gets a keyed pseudonym instead of an empty
// value, so one patient's objects stay linked across transfers and
// protocols.
func DICOMBasicRules(opts DICOMOptions) []Rule {
	out := make([]Rule, 0, len(basicTable)+1)
	for _, a := range basicTable {
		if a.Field == "(0010,0020)" {
			out = append(out, Rule{Field: a.Field, Action: Pseudonym, Value: pseudonym.KindPatientID})
			continue
		}
		out = append(out, Rule{Field: a.Field, Action: resolveBasic(a, opts)})
	}
	return append(out, Rule{Field: DICOMPrivateTags, Action: Remove})
}

func resolveBasic(a DICOMBasicAttribute, o DICOMOptions) Action {
	act := basicActions[a.Basic]
	for _, opt := range strings.Fields(a.Options) {
		on, code, _ := strings.Cut(opt, ":")
		switch {
		case on == "L" && o.RetainLongitudinalModifiedDates:
			switch a.VR {
			case "DA", "DT":
				act = DateShift
			case "TM":
				act = Keep
			}
		case on == "P" && o.RetainPatientCharacteristics,
			on == "V" && o.RetainDeviceIdentity,
			on == "D" && o.CleanDescriptors:
			if code == "K" {
				act = Keep
			} else {
				act = Clean
			}
		}
	}
	return act
}

var basicActions = map[string]Action{
	"X":      Remove,
	"Z":      Empty,
	"D":      Replace,
	"U":      UIDRemap,
	"K":      Keep,
	"C":      Clean,
	"X/Z":    Empty,
	"X/D":    Replace,
	"Z/D":    Replace,
	"X/Z/D":  Replace,
	"X/Z/U*": UIDRemap,
}

// DICOMCode is a coded entry: code value, coding scheme designator, code
// meaning.
type DICOMCode struct {
	Value   string
	Scheme  string
	Meaning string
}

// DICOMDeidentificationCodes returns the codes (PS3.16 CID 7050) of the
// profile and options used, for De-identification Method Code Sequence
// (0012,0064).
func DICOMDeidentificationCodes(o DICOMOptions) []DICOMCode {
	codes := []DICOMCode{{"113100", "DCM", "Basic Application Confidentiality Profile"}}
	if o.CleanDescriptors {
		codes = append(codes, DICOMCode{"113105", "DCM", "Clean Descriptors Option"})
	}
	if o.RetainLongitudinalModifiedDates {
		codes = append(codes, DICOMCode{"113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option"})
	}
	if o.RetainPatientCharacteristics {
		codes = append(codes, DICOMCode{"113108", "DCM", "Retain Patient Characteristics Option"})
	}
	if o.RetainDeviceIdentity {
		codes = append(codes, DICOMCode{"113109", "DCM", "Retain Device Identity Option"})
	}
	return codes
}

// DICOMDeidentificationMethod returns the value of De-identification
// Method (0012,0063): the profile and each option used, one LO value (at
// most 64 characters) each, separated by backslashes.
func DICOMDeidentificationMethod(o DICOMOptions) string {
	v := []string{"PS3.15 Annex E Basic Profile (medgate dicom-basic)"}
	if o.RetainLongitudinalModifiedDates {
		v = append(v, "Retain Longitudinal Temporal Information Modified Dates")
	}
	if o.RetainPatientCharacteristics {
		v = append(v, "Retain Patient Characteristics")
	}
	if o.RetainDeviceIdentity {
		v = append(v, "Retain Device Identity")
	}
	if o.CleanDescriptors {
		v = append(v, "Clean Descriptors")
	}
	return strings.Join(v, `\`)
}

// basicTable is PS3.15 Table E.1-1 (Application Level Confidentiality
// Profile Attributes): the basic profile column and the columns of the
// options DICOMOptions offers.
var basicTable = []DICOMBasicAttribute{
	{"(0000,1000)", "AffectedSOPInstanceUID", "UI", "X", ""},
	{"(0000,1001)", "RequestedSOPInstanceUID", "UI", "U", ""},
	{"(0002,0003)", "MediaStorageSOPInstanceUID", "UI", "U", ""},
	{"(0004,1511)", "ReferencedSOPInstanceUIDInFile", "UI", "U", ""},
	{"(0008,0014)", "InstanceCreatorUID", "UI", "U", ""},
	{"(0008,0015)", "InstanceCoercionDateTime", "DT", "X", "L:C"},
	{"(0008,0018)", "SOPInstanceUID", "UI", "U", ""},
	{"(0008,0020)", "StudyDate", "DA", "Z", "L:C"},
	{"(0008,0021)", "SeriesDate", "DA", "X/D", "L:C"},
	{"(0008,0022)", "AcquisitionDate", "DA", "X/Z", "L:C"},
	{"(0008,0023)", "ContentDate", "DA", "Z/D", "L:C"},
	{"(0008,0024)", "OverlayDate", "DA", "X", "L:C"},
	{"(0008,0025)", "CurveDate", "DA", "X", "L:C"},
	{"(0008,002A)", "AcquisitionDateTime", "DT", "X/Z/D", "L:C"},
	{"(0008,0030)", "StudyTime", "TM", "Z", "L:C"},
	{"(0008,0031)", "SeriesTime", "TM", "X/D", "L:C"},
	{"(0008,0032)", "AcquisitionTime", "TM", "X/Z", "L:C"},
	{"(0008,0033)", "ContentTime", "TM", "Z/D", "L:C"},
	{"(0008,0034)", "OverlayTime", "TM", "X", "L:C"},
	{"(0008,0035)", "CurveTime", "TM", "X", "L:C"},
	{"(0008,0050)", "AccessionNumber", "SH", "Z", ""},
	{"(0008,0058)", "FailedSOPInstanceUIDList", "UI", "U", ""},
	{"(0008,0080)", "InstitutionName", "LO", "X/Z/D", ""},
	{"(0008,0081)", "InstitutionAddress", "ST", "X", ""},
	{"(0008,0082)", "InstitutionCodeSequence", "SQ", "X/Z/D", ""},
	{"(0008,0090)", "ReferringPhysicianName", "PN", "Z", ""},
	{"(0008,0092)", "ReferringPhysicianAddress", "ST", "X", ""},
	{"(0008,0094)", "ReferringPhysicianTelephoneNumbers", "SH", "X", ""},
	{"(0008,0096)", "ReferringPhysicianIdentificationSequence", "SQ", "X", ""},
	{"(0008,009C)", "ConsultingPhysicianName", "PN", "Z", ""},
	{"(0008,009D)", "ConsultingPhysicianIdentificationSequence", "SQ", "X", ""},
	{"(0008,0201)", "TimezoneOffsetFromUTC", "SH", "X", "L:C"},
	{"(0008,1010)", "StationName", "SH", "X/Z/D", "V:K"},
	{"(0008,1030)", "StudyDescription", "LO", "X", "D:C"},
	{"(0008,103E)", "SeriesDescription", "LO", "X", "D:C"},
	{"(0008,1040)", "InstitutionalDepartmentName", "LO", "X", ""},
	{"(0008,1041)", "InstitutionalDepartmentTypeCodeSequence", "SQ", "X", ""},
	{"(0008,1048)", "PhysiciansOfRecord", "PN", "X", ""},
	{"(0008,1049)", "PhysiciansOfRecordIdentificationSequence", "SQ", "X", ""},
	{"(0008,1050)", "PerformingPhysicianName", "PN", "X", ""},
	{"(0008,1052)", "PerformingPhysicianIdentificationSequence", "SQ", "X", ""},
	{"(0008,1060)", "NameOfPhysiciansReadingStudy", "PN", "X", ""},
	{"(0008,1062)", "PhysiciansReadingStudyIdentificationSequence", "SQ", "X", ""},
	{"(0008,1070)", "OperatorsName", "PN", "X/Z/D", ""},
	{"(0008,1072)", "OperatorIdentificationSequence", "SQ", "X/D", ""},
	{"(0008,1080)", "AdmittingDiagnosesDescription", "LO", "X", "D:C"},
	{"(0008,1084)", "AdmittingDiagnosesCodeSequence", "SQ", "X", "D:C"},
	{"(0008,1110)", "ReferencedStudySequence", "SQ", "X/Z", ""},
	{"(0008,1111)", "ReferencedPerformedProcedureStepSequence", "SQ", "X/Z/D", ""},
	{"(0008,1120)", "ReferencedPatientSequence", "SQ", "X", ""},
	{"(0008,1140)", "ReferencedImageSequence", "SQ", "X/Z/U*", ""},
	{"(0008,1155)", "ReferencedSOPInstanceUID", "UI", "U", ""},
	{"(0008,1195)", "TransactionUID", "UI", "U", ""},
	{"(0008,2111)", "DerivationDescription", "ST", "X", "D:C"},
	{"(0008,2112)", "SourceImageSequence", "SQ", "X/Z/U*", ""},
	{"(0008,3010)", "IrradiationEventUID", "UI", "U", ""},
	{"(0008,4000)", "IdentifyingComments", "LT", "X", "D:C"},
	{"(0010,0010)", "PatientName", "PN", "Z", ""},
	{"(0010,0020)", "PatientID", "LO", "Z", ""},
	{"(0010,0021)", "IssuerOfPatientID", "LO", "X", ""},
	{"(0010,0030)", "PatientBirthDate", "DA", "Z", ""},
	{"(0010,0032)", "PatientBirthTime", "TM", "X", ""},
	{"(0010,0040)", "PatientSex", "CS", "Z", "P:K"},
	{"(0010,0050)", "PatientInsurancePlanCodeSequence", "SQ", "X", ""},
	{"(0010,0101)", "PatientPrimaryLanguageCodeSequence", "SQ", "X", ""},
	{"(0010,0102)", "PatientPrimaryLanguageModifierCodeSequence", "SQ", "X", ""},
	{"(0010,1000)", "OtherPatientIDs", "LO", "X", ""},
	{"(0010,1001)", "OtherPatientNames", "PN", "X", ""},
	{"(0010,1002)", "OtherPatientIDsSequence", "SQ", "X", ""},
	{"(0010,1005)", "PatientBirthName", "PN", "X", ""},
	{"(0010,1010)", "PatientAge", "AS", "X", "P:K"},
	{"(0010,1020)", "PatientSize", "DS", "X", "P:K"},
	{"(0010,1030)", "PatientWeight", "DS", "X", "P:K"},
	{"(0010,1040)", "PatientAddress", "LO", "X", ""},
	{"(0010,1050)", "InsurancePlanIdentification", "LO", "X", ""},
	{"(0010,1060)", "PatientMotherBirthName", "PN", "X", ""},
	{"(0010,1080)", "MilitaryRank", "LO", "X", ""},
	{"(0010,1081)", "BranchOfService", "LO", "X", ""},
	{"(0010,1090)", "MedicalRecordLocator", "LO", "X", ""},
	{"(0010,1100)", "ReferencedPatientPhotoSequence", "SQ", "X", ""},
	{"(0010,2000)", "MedicalAlerts", "LO", "X", "D:C"},
	{"(0010,2110)", "Allergies", "LO", "X", "P:C D:C"},
	{"(0010,2150)", "CountryOfResidence", "LO", "X", ""},
	{"(0010,2152)", "RegionOfResidence", "LO", "X", ""},
	{"(0010,2154)", "PatientTelephoneNumbers", "SH", "X", ""},
	{"(0010,2155)", "PatientTelecomInformation", "LT", "X", ""},
	{"(0010,2160)", "EthnicGroup", "SH", "X", "P:K"},
	{"(0010,2180)", "Occupation", "SH", "X", "D:C"},
	{"(0010,21A0)", "SmokingStatus", "CS", "X", "P:K"},
	{"(0010,21B0)", "AdditionalPatientHistory", "LT", "X", "D:C"},
	{"(0010,21C0)", "PregnancyStatus", "US", "X", "P:K"},
	{"(0010,21D0)", "LastMenstrualDate", "DA", "X", "L:C"},
	{"(0010,21F0)", "PatientReligiousPreference", "LO", "X", ""},
	{"(0010,2203)", "PatientSexNeutered", "CS", "X/Z", "P:K"},
	{"(0010,2297)", "ResponsiblePerson", "PN", "X", ""},
	{"(0010,2299)", "ResponsibleOrganization", "LO", "X", ""},
	{"(0010,4000)", "PatientComments", "LT", "X", "D:C"},
	{"(0012,0010)", "ClinicalTrialSponsorName", "LO", "D", ""},
	{"(0012,0020)", "ClinicalTrialProtocolID", "LO", "D", ""},
	{"(0012,0021)", "ClinicalTrialProtocolName", "LO", "Z", ""},
	{"(0012,0030)", "ClinicalTrialSiteID", "LO", "Z", ""},
	{"(0012,0031)", "ClinicalTrialSiteName", "LO", "Z", ""},
	{"(0012,0040)", "ClinicalTrialSubjectID", "LO", "D", ""},
	{"(0012,0042)", "ClinicalTrialSubjectReadingID", "LO", "D", ""},
	{"(0012,0050)", "ClinicalTrialTimePointID", "LO", "Z", ""},
	{"(0012,0051)", "ClinicalTrialTimePointDescription", "ST", "X", "D:C"},
	{"(0012,0060)", "ClinicalTrialCoordinatingCenterName", "LO", "Z", ""},
	{"(0012,0071)", "ClinicalTrialSeriesID", "LO", "X", ""},
	{"(0012,0072)", "ClinicalTrialSeriesDescription", "LO", "X", "D:C"},
	{"(0012,0081)", "ClinicalTrialProtocolEthicsCommitteeName", "LO", "D", ""},
	{"(0012,0082)", "ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "LO", "X", ""},
	{"(0016,002B)", "MakerNote", "OB", "X", "D:C"},
	{"(0016,004B)", "DeviceSettingDescription", "OB", "X", "D:C"},
	{"(0016,004D)", "CameraOwnerName", "UT", "X", ""},
	{"(0016,004E)", "LensSpecification", "DS", "X", "V:K"},
	{"(0016,004F)", "LensMake", "UT", "X", "V:K"},
	{"(0016,0050)", "LensModel", "UT", "X", "V:K"},
	{"(0016,0051)", "LensSerialNumber", "UT", "X", "V:K"},
	{"(0016,0070)", "GPSVersionID", "OB", "X", ""},
	{"(0016,0071)", "GPSLatitudeRef", "CS", "X", ""},
	{"(0016,0072)", "GPSLatitude", "DS", "X", ""},
	{"(0016,0073)", "GPSLongitudeRef", "CS", "X", ""},
	{"(0016,0074)", "GPSLongitude", "DS", "X", ""},
	{"(0016,0075)", "GPSAltitudeRef", "US", "X", ""},
	{"(0016,0076)", "GPSAltitude", "DS", "X", ""},
	{"(0016,0077)", "GPSTimeStamp", "DT", "X", ""},
	{"(0016,0078)", "GPSSatellites", "UT", "X", ""},
	{"(0016,0079)", "GPSStatus", "CS", "X", ""},
	{"(0016,007A)", "GPSMeasureMode", "CS", "X", ""},
	{"(0016,007B)", "GPSDOP", "DS", "X", ""},
	{"(0016,007C)", "GPSSpeedRef", "CS", "X", ""},
	{"(0016,007D)", "GPSSpeed", "DS", "X", ""},
	{"(0016,007E)", "GPSTrackRef", "CS", "X", ""},
	{"(0016,007F)", "GPSTrack", "DS", "X", ""},
	{"(0016,0080)", "GPSImgDirectionRef", "CS", "X", ""},
	{"(0016,0081)", "GPSImgDirection", "DS", "X", ""},
	{"(0016,0082)", "GPSMapDatum", "UT", "X", ""},
	{"(0016,0083)", "GPSDestLatitudeRef", "CS", "X", ""},
	{"(0016,0084)", "GPSDestLatitude", "DS", "X", ""},
	{"(0016,0085)", "GPSDestLongitudeRef", "CS", "X", ""},
	{"(0016,0086)", "GPSDestLongitude", "DS", "X", ""},
	{"(0016,0087)", "GPSDestBearingRef", "CS", "X", ""},
	{"(0016,0088)", "GPSDestBearing", "DS", "X", ""},
	{"(0016,0089)", "GPSDestDistanceRef", "CS", "X", ""},
	{"(0016,008A)", "GPSDestDistance", "DS", "X", ""},
	{"(0016,008B)", "GPSProcessingMethod", "OB", "X", ""},
	{"(0016,008C)", "GPSAreaInformation", "OB", "X", ""},
	{"(0016,008D)", "GPSDateStamp", "DT", "X", "L:C"},
	{"(0016,008E)", "GPSDifferential", "IS", "X", ""},
	{"(0018,0010)", "ContrastBolusAgent", "LO", "Z/D", "D:C"},
	{"(0018,1000)", "DeviceSerialNumber", "LO", "X/Z/D", "V:K"},
	{"(0018,1002)", "DeviceUID", "UI", "U", "V:K"},
	{"(0018,1004)", "PlateID", "LO", "X", "V:K"},
	{"(0018,1005)", "GeneratorID", "LO", "X", "V:K"},
	{"(0018,1007)", "CassetteID", "LO", "X", "V:K"},
	{"(0018,1008)", "GantryID", "LO", "X", "V:K"},
	{"(0018,1009)", "UniqueDeviceIdentifier", "UT", "X", "V:K"},
	{"(0018,100A)", "UDISequence", "SQ", "X", "V:K"},
	{"(0018,100B)", "ManufacturerDeviceClassUID", "UI", "U", "V:K"},
	{"(0018,1030)", "ProtocolName", "LO", "X/D", "D:C"},
	{"(0018,11BB)", "AcquisitionFieldOfViewLabel", "LO", "D", "D:C"},
	{"(0018,1400)", "AcquisitionDeviceProcessingDescription", "LO", "X/D", "D:C"},
	{"(0018,2042)", "TargetUID", "UI", "U", ""},
	{"(0018,4000)", "AcquisitionComments", "LT", "X", "D:C"},
	{"(0018,5011)", "TransducerIdentificationSequence", "SQ", "X", "V:K"},
	{"(0018,700A)", "DetectorID", "SH", "X/D", "V:K"},
	{"(0018,9185)", "RespiratoryMotionCompensationTechniqueDescription", "ST", "X", "D:C"},
	{"(0018,9367)", "XRaySourceID", "UC", "D", "V:K"},
	{"(0018,9369)", "SourceStartDateTime", "DT", "D", "L:C"},
	{"(0018,936A)", "SourceEndDateTime", "DT", "D", "L:C"},
	{"(0018,9371)", "XRayDetectorID", "UC", "D", "V:K"},
	{"(0018,9373)", "XRayDetectorLabel", "ST", "X", "V:K"},
	{"(0018,937B)", "MultienergyAcquisitionDescription", "UT", "X", "D:C"},
	{"(0018,937F)", "DecompositionDescription", "UT", "X", "D:C"},
	{"(0018,9424)", "AcquisitionProtocolDescription", "LT", "X", "D:C"},
	{"(0018,9516)", "StartAcquisitionDateTime", "DT", "X/D", "L:C"},
	{"(0018,9517)", "EndAcquisitionDateTime", "DT", "X/D", "L:C"},
	{"(0018,9937)", "RequestedSeriesDescription", "LO", "X", "D:C"},
	{"(0018,A003)", "ContributionDescription", "ST", "X", "D:C"},
	{"(0020,000D)", "StudyInstanceUID", "UI", "U", ""},
	{"(0020,000E)", "SeriesInstanceUID", "UI", "U", ""},
	{"(0020,0010)", "StudyID", "SH", "Z", ""},
	{"(0020,0052)", "FrameOfReferenceUID", "UI", "U", ""},
	{"(0020,0200)", "SynchronizationFrameOfReferenceUID", "UI", "U", ""},
	{"(0020,3401)", "ModifyingDeviceID", "CS", "X", ""},
	{"(0020,3406)", "ModifiedImageDescription", "LO", "X", ""},
	{"(0020,4000)", "ImageComments", "LT", "X", "D:C"},
	{"(0020,9158)", "FrameComments", "LT", "X", "D:C"},
	{"(0020,9161)", "ConcatenationUID", "UI", "U", ""},
	{"(0020,9164)", "DimensionOrganizationUID", "UI", "U", ""},
	{"(0028,1199)", "PaletteColorLookupTableUID", "UI", "U", ""},
	{"(0028,1214)", "LargePaletteColorLookupTableUID", "UI", "U", ""},
	{"(0028,4000)", "ImagePresentationComments", "LT", "X", ""},
	{"(0032,0012)", "StudyIDIssuer", "LO", "X", ""},
	{"(0032,1020)", "ScheduledStudyLocation", "LO", "X", "V:K"},
	{"(0032,1021)", "ScheduledStudyLocationAETitle", "AE", "X", "V:K"},
	{"(0032,1030)", "ReasonForStudy", "LO", "X", "D:C"},
	{"(0032,1032)", "RequestingPhysician", "PN", "X", ""},
	{"(0032,1033)", "RequestingService", "LO", "X", ""},
	{"(0032,1060)", "RequestedProcedureDescription", "LO", "X/Z", "D:C"},
	{"(0032,1066)", "ReasonForVisit", "UT", "X", "D:C"},
	{"(0032,1067)", "ReasonForVisitCodeSequence", "SQ", "X", "D:C"},
	{"(0032,1070)", "RequestedContrastAgent", "LO", "X", "D:C"},
	{"(0032,4000)", "StudyComments", "LT", "X", "D:C"},
	{"(0034,0001)", "FlowIdentifierSequence", "SQ", "D", ""},
	{"(0034,0002)", "FlowIdentifier", "OB", "D", ""},
	{"(0034,0005)", "SourceIdentifier", "OB", "D", ""},
	{"(0034,0007)", "FrameOriginTimestamp", "OB", "D", "L:C"},
	{"(0038,0004)", "ReferencedPatientAliasSequence", "SQ", "X", ""},
	{"(0038,0010)", "AdmissionID", "LO", "X", ""},
	{"(0038,0011)", "IssuerOfAdmissionID", "LO", "X", ""},
	{"(0038,0014)", "IssuerOfAdmissionIDSequence", "SQ", "X", ""},
	{"(0038,001E)", "ScheduledPatientInstitutionResidence", "LO", "X", ""},
	{"(0038,0020)", "AdmittingDate", "DA", "X", "L:C"},
	{"(0038,0021)", "AdmittingTime", "TM", "X", "L:C"},
	{"(0038,0040)", "DischargeDiagnosisDescription", "LO", "X", "D:C"},
	{"(0038,0050)", "SpecialNeeds", "LO", "X", "P:C"},
	{"(0038,0060)", "ServiceEpisodeID", "LO", "X", ""},
	{"(0038,0061)", "IssuerOfServiceEpisodeID", "LO", "X", ""},
	{"(0038,0062)", "ServiceEpisodeDescription", "LO", "X", "D:C"},
	{"(0038,0064)", "IssuerOfServiceEpisodeIDSequence", "SQ", "X", ""},
	{"(0038,0300)", "CurrentPatientLocation", "LO", "X", ""},
	{"(0038,0400)", "PatientInstitutionResidence", "LO", "X", ""},
	{"(0038,0500)", "PatientState", "LO", "X", "P:C D:C"},
	{"(0038,4000)", "VisitComments", "LT", "X", "D:C"},
	{"(003A,0310)", "MultiplexGroupUID", "UI", "U", ""},
	{"(003A,0314)", "ImpedanceMeasurementDateTime", "DT", "D", "L:C"},
	{"(0040,0001)", "ScheduledStationAETitle", "AE", "X", "V:K"},
	{"(0040,0002)", "ScheduledProcedureStepStartDate", "DA", "X", "L:C"},
	{"(0040,0003)", "ScheduledProcedureStepStartTime", "TM", "X", "L:C"},
	{"(0040,0004)", "ScheduledProcedureStepEndDate", "DA", "X", "L:C"},
	{"(0040,0005)", "ScheduledProcedureStepEndTime", "TM", "X", "L:C"},
	{"(0040,0006)", "ScheduledPerformingPhysicianName", "PN", "X", ""},
	{"(0040,0007)", "ScheduledProcedureStepDescription", "LO", "X", "D:C"},
	{"(0040,0009)", "ScheduledProcedureStepID", "SH", "X", ""},
	{"(0040,000B)", "ScheduledPerformingPhysicianIdentificationSequence", "SQ", "X", ""},
	{"(0040,0010)", "ScheduledStationName", "SH", "X", "V:K"},
	{"(0040,0011)", "ScheduledProcedureStepLocation", "SH", "X", "V:K"},
	{"(0040,0012)", "PreMedication", "LO", "X", "P:C"},
	{"(0040,0241)", "PerformedStationAETitle", "AE", "X", "V:K"},
	{"(0040,0242)", "PerformedStationName", "SH", "X", "V:K"},
	{"(0040,0243)", "PerformedLocation", "SH", "X", ""},
	{"(0040,0244)", "PerformedProcedureStepStartDate", "DA", "X", "L:C"},
	{"(0040,0245)", "PerformedProcedureStepStartTime", "TM", "X", "L:C"},
	{"(0040,0250)", "PerformedProcedureStepEndDate", "DA", "X", "L:C"},
	{"(0040,0251)", "PerformedProcedureStepEndTime", "TM", "X", "L:C"},
	{"(0040,0253)", "PerformedProcedureStepID", "SH", "X", ""},
	{"(0040,0254)", "PerformedProcedureStepDescription", "LO", "X", "D:C"},
	{"(0040,0275)", "RequestAttributesSequence", "SQ", "X", "D:C"},
	{"(0040,0280)", "CommentsOnThePerformedProcedureStep", "ST", "X", "D:C"},
	{"(0040,0310)", "CommentsOnRadiationDose", "ST", "X", "D:C"},
	{"(0040,050A)", "SpecimenAccessionNumber", "LO", "X", ""},
	{"(0040,0512)", "ContainerIdentifier", "LO", "D", ""},
	{"(0040,0513)", "IssuerOfTheContainerIdentifierSequence", "SQ", "Z", ""},
	{"(0040,051A)", "ContainerDescription", "LO", "X", "D:C"},
	{"(0040,0551)", "SpecimenIdentifier", "LO", "D", ""},
	{"(0040,0554)", "SpecimenUID", "UI", "U", ""},
	{"(0040,0555)", "AcquisitionContextSequence", "SQ", "X/Z", ""},
	{"(0040,0562)", "IssuerOfTheSpecimenIdentifierSequence", "SQ", "Z", ""},
	{"(0040,0600)", "SpecimenShortDescription", "LO", "X", "D:C"},
	{"(0040,0602)", "SpecimenDetailedDescription", "UT", "X", "D:C"},
	{"(0040,0610)", "SpecimenPreparationSequence", "SQ", "Z", ""},
	{"(0040,06FA)", "SlideIdentifier", "LO", "X", ""},
	{"(0040,1001)", "RequestedProcedureID", "SH", "X", ""},
	{"(0040,1002)", "ReasonForTheRequestedProcedure", "LO", "X", "D:C"},
	{"(0040,1004)", "PatientTransportArrangements", "LO", "X", ""},
	{"(0040,1005)", "RequestedProcedureLocation", "LO", "X", ""},
	{"(0040,100A)", "ReasonForRequestedProcedureCodeSequence", "SQ", "X", "D:C"},
	{"(0040,1010)", "NamesOfIntendedRecipientsOfResults", "PN", "X", ""},
	{"(0040,1011)", "IntendedRecipientsOfResultsIdentificationSequence", "SQ", "X", ""},
	{"(0040,1101)", "PersonIdentificationCodeSequence", "SQ", "D", ""},
	{"(0040,1102)", "PersonAddress", "ST", "X", ""},
	{"(0040,1103)", "PersonTelephoneNumbers", "LO", "X", ""},
	{"(0040,1104)", "PersonTelecomInformation", "LT", "X", ""},
	{"(0040,1400)", "RequestedProcedureComments", "LT", "X", "D:C"},
	{"(0040,2001)", "ReasonForTheImagingServiceRequest", "LO", "X", "D:C"},
	{"(0040,2008)", "OrderEnteredBy", "PN", "X", ""},
	{"(0040,2009)", "OrderEntererLocation", "SH", "X", ""},
	{"(0040,2010)", "OrderCallbackPhoneNumber", "SH", "X", ""},
	{"(0040,2011)", "OrderCallbackTelecomInformation", "LT", "X", ""},
	{"(0040,2016)", "PlacerOrderNumberImagingServiceRequest", "LO", "Z", ""},
	{"(0040,2017)", "FillerOrderNumberImagingServiceRequest", "LO", "Z", ""},
	{"(0040,2400)", "ImagingServiceRequestComments", "LT", "X", "D:C"},
	{"(0040,3001)", "ConfidentialityConstraintOnPatientDataDescription", "LO", "X", ""},
	{"(0040,4005)", "ScheduledProcedureStepStartDateTime", "DT", "X", "L:C"},
	{"(0040,4008)", "ScheduledProcedureStepExpirationDateTime", "DT", "X", "L:C"},
	{"(0040,4010)", "ScheduledProcedureStepModificationDateTime", "DT", "X", "L:C"},
	{"(0040,4011)", "ExpectedCompletionDateTime", "DT", "X", "L:C"},
	{"(0040,4023)", "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID", "UI", "U", ""},
	{"(0040,4025)", "ScheduledStationNameCodeSequence", "SQ", "X", "V:K"},
	{"(0040,4027)", "ScheduledStationGeographicLocationCodeSequence", "SQ", "X", "V:K"},
	{"(0040,4028)", "PerformedStationNameCodeSequence", "SQ", "X", "V:K"},
	{"(0040,4030)", "PerformedStationGeographicLocationCodeSequence", "SQ", "X", "V:K"},
	{"(0040,4034)", "ScheduledHumanPerformersSequence", "SQ", "X", ""},
	{"(0040,4035)", "ActualHumanPerformersSequence", "SQ", "X", ""},
	{"(0040,4036)", "HumanPerformerOrganization", "LO", "X", ""},
	{"(0040,4037)", "HumanPerformerName", "PN", "X", ""},
	{"(0040,4050)", "PerformedProcedureStepStartDateTime", "DT", "X", "L:C"},
	{"(0040,4051)", "PerformedProcedureStepEndDateTime", "DT", "X", "L:C"},
	{"(0040,4052)", "ProcedureStepCancellationDateTime", "DT", "X", "L:C"},
	{"(0040,A027)", "VerifyingOrganization", "LO", "D", ""},
	{"(0040,A073)", "VerifyingObserverSequence", "SQ", "D", ""},
	{"(0040,A075)", "VerifyingObserverName", "PN", "D", ""},
	{"(0040,A078)", "AuthorObserverSequence", "SQ", "X", ""},
	{"(0040,A07A)", "ParticipantSequence", "SQ", "X", ""},
	{"(0040,A07C)", "CustodialOrganizationSequence", "SQ", "X", ""},
	{"(0040,A088)", "VerifyingObserverIdentificationCodeSequence", "SQ", "Z", ""},
	{"(0040,A123)", "PersonName", "PN", "D", ""},
	{"(0040,A124)", "UID", "UI", "U", ""},
	{"(0040,A171)", "ObservationUID", "UI", "U", ""},
	{"(0040,A172)", "ReferencedObservationUIDTrial", "UI", "U", ""},
	{"(0040,A192)", "ObservationDateTrial", "DA", "X", "L:C"},
	{"(0040,A193)", "ObservationTimeTrial", "TM", "X", "L:C"},
	{"(0040,A307)", "CurrentObserverTrial", "PN", "X", ""},
	{"(0040,A352)", "VerbalSourceTrial", "PN", "X", ""},
	{"(0040,A353)", "AddressTrial", "ST", "X", ""},
	{"(0040,A354)", "TelephoneNumberTrial", "LO", "X", ""},
	{"(0040,A358)", "VerbalSourceIdentifierCodeSequenceTrial", "SQ", "X", ""},
	{"(0040,A402)", "ObservationSubjectUIDTrial", "UI", "U", ""},
	{"(0040,A730)", "ContentSequence", "SQ", "D", ""},
	{"(0040,DB0C)", "TemplateExtensionOrganizationUID", "UI", "U", ""},
	{"(0040,DB0D)", "TemplateExtensionCreatorUID", "UI", "U", ""},
	{"(0050,001B)", "ContainerComponentID", "LO", "X", ""},
	{"(0050,0020)", "DeviceDescription", "LO", "X", "V:K"},
	{"(0050,0021)", "LongDeviceDescription", "ST", "X", "D:C"},
	{"(0062,0021)", "TrackingUID", "UI", "U", ""},
	{"(0070,0001)", "GraphicAnnotationSequence", "SQ", "D", ""},
	{"(0070,0084)", "ContentCreatorName", "PN", "Z/D", ""},
	{"(0070,0086)", "ContentCreatorIdentificationCodeSequence", "SQ", "X", ""},
	{"(0070,031A)", "FiducialUID", "UI", "U", ""},
	{"(0070,1101)", "PresentationDisplayCollectionUID", "UI", "U", ""},
	{"(0070,1102)", "PresentationSequenceCollectionUID", "UI", "U", ""},
	{"(0088,0140)", "StorageMediaFileSetUID", "UI", "U", ""},
	{"(0088,0200)", "IconImageSequence", "SQ", "X", ""},
	{"(0088,0904)", "TopicTitle", "LO", "X", ""},
	{"(0088,0906)", "TopicSubject", "ST", "X", ""},
	{"(0088,0910)", "TopicAuthor", "LO", "X", ""},
	{"(0088,0912)", "TopicKeywords", "LO", "X", ""},
	{"(0400,0100)", "DigitalSignatureUID", "UI", "U", ""},
	{"(0400,0402)", "ReferencedDigitalSignatureSequence", "SQ", "X", ""},
	{"(0400,0403)", "ReferencedSOPInstanceMACSequence", "SQ", "X", ""},
	{"(0400,0404)", "MAC", "OB", "X", ""},
	{"(0400,0550)", "ModifiedAttributesSequence", "SQ", "X", ""},
	{"(0400,0551)", "NonconformingModifiedAttributesSequence", "SQ", "X", ""},
	{"(0400,0552)", "NonconformingDataElementValue", "OB", "X", ""},
	{"(0400,0561)", "OriginalAttributesSequence", "SQ", "X", ""},
	{"(0400,0600)", "InstanceOriginStatus", "CS", "X", ""},
	{"(2030,0020)", "TextString", "LO", "X", ""},
	{"(2200,0002)", "LabelText", "UT", "X/Z", "D:C"},
	{"(2200,0005)", "BarcodeValue", "LT", "X/Z", ""},
	{"(3006,0002)", "StructureSetLabel", "SH", "D", "D:C"},
	{"(3006,0004)", "StructureSetName", "LO", "X", "D:C"},
	{"(3006,0006)", "StructureSetDescription", "ST", "X", "D:C"},
	{"(3006,0008)", "StructureSetDate", "DA", "Z", "L:C"},
	{"(3006,0009)", "StructureSetTime", "TM", "X/D", "L:C"},
	{"(3006,0024)", "ReferencedFrameOfReferenceUID", "UI", "U", ""},
	{"(3006,0026)", "ROIName", "LO", "Z", "D:C"},
	{"(3006,0028)", "ROIDescription", "ST", "X", "D:C"},
	{"(3006,0038)", "ROIGenerationDescription", "LO", "X", "D:C"},
	{"(3006,0085)", "ROIObservationLabel", "SH", "X", "D:C"},
	{"(3006,0088)", "ROIObservationDescription", "ST", "X", "D:C"},
	{"(3006,00A6)", "ROIInterpreter", "PN", "Z", ""},
	{"(3006,00C2)", "RelatedFrameOfReferenceUID", "UI", "U", ""},
	{"(3008,0054)", "FirstTreatmentDate", "DA", "X/D", "L:C"},
	{"(3008,0056)", "MostRecentTreatmentDate", "DA", "X/D", "L:C"},
	{"(3008,0105)", "SourceSerialNumber", "LO", "X/Z", "V:K"},
	{"(3008,0250)", "TreatmentDate", "DA", "X/D", "L:C"},
	{"(3008,0251)", "TreatmentTime", "TM", "X/D", "L:C"},
	{"(300A,0002)", "RTPlanLabel", "SH", "D", "D:C"},
	{"(300A,0003)", "RTPlanName", "LO", "X", "D:C"},
	{"(300A,0004)", "RTPlanDescription", "ST", "X", "D:C"},
	{"(300A,0006)", "RTPlanDate", "DA", "X/D", "L:C"},
	{"(300A,0007)", "RTPlanTime", "TM", "X/D", "L:C"},
	{"(300A,000E)", "PrescriptionDescription", "ST", "X", "D:C"},
	{"(300A,0013)", "DoseReferenceUID", "UI", "U", ""},
	{"(300A,0016)", "DoseReferenceDescription", "LO", "X", "D:C"},
	{"(300A,0072)", "FractionGroupDescription", "LO", "X", "D:C"},
	{"(300A,0083)", "ReferencedDoseReferenceUID", "UI", "U", ""},
	{"(300A,00B2)", "TreatmentMachineName", "SH", "X", "V:K"},
	{"(300A,00C3)", "BeamDescription", "ST", "X", "D:C"},
	{"(300A,00DD)", "BolusDescription", "ST", "X", "D:C"},
	{"(300A,0196)", "FixationDeviceDescription", "ST", "X", "D:C"},
	{"(300A,01A6)", "ShieldingDeviceDescription", "ST", "X", "D:C"},
	{"(300A,01B2)", "SetupTechniqueDescription", "ST", "X", "D:C"},
	{"(300A,0216)", "SourceManufacturer", "LO", "X", "V:K"},
	{"(300A,02EB)", "CompensatorDescription", "LT", "X", "D:C"},
	{"(300A,0608)", "TreatmentPositionGroupLabel", "LO", "D", "D:C"},
	{"(300A,0609)", "TreatmentPositionGroupUID", "UI", "U", ""},
	{"(300A,0611)", "RTAccessoryHolderSlotID", "LO", "Z", ""},
	{"(300A,0615)", "RTAccessoryDeviceSlotID", "LO", "Z", ""},
	{"(300A,0619)", "RadiationDoseIdentificationLabel", "LO", "D", "D:C"},
	{"(300A,0623)", "RadiationDoseInVivoMeasurementLabel", "LO", "D", "D:C"},
	{"(300A,062A)", "RTToleranceSetLabel", "LO", "D", "D:C"},
	{"(300A,0650)", "PatientSetupUID", "UI", "U", ""},
	{"(300A,0676)", "EquipmentFrameOfReferenceDescription", "ST", "X", "D:C"},
	{"(300A,067C)", "RadiationGenerationModeLabel", "SH", "D", "D:C"},
	{"(300A,067D)", "RadiationGenerationModeDescription", "ST", "Z", "D:C"},
	{"(300A,0700)", "TreatmentSessionUID", "UI", "U", ""},
	{"(300A,0734)", "TreatmentToleranceViolationDescription", "ST", "D", "D:C"},
	{"(300A,0736)", "TreatmentToleranceViolationDateTime", "DT", "D", "L:C"},
	{"(300A,073A)", "RecordedRTControlPointDateTime", "DT", "D", "L:C"},
	{"(300A,0741)", "InterlockDateTime", "DT", "D", "L:C"},
	{"(300A,0742)", "InterlockDescription", "ST", "D", "D:C"},
	{"(300A,0760)", "OverrideDateTime", "DT", "D", "L:C"},
	{"(300A,0783)", "InterlockOriginDescription", "ST", "D", "D:C"},
	{"(300C,0113)", "ReasonForOmissionDescription", "LO", "X", "D:C"},
	{"(300E,0008)", "ReviewerName", "PN", "X/Z", ""},
	{"(3010,0006)", "ConceptualVolumeUID", "UI", "U", ""},
	{"(3010,000B)", "ReferencedConceptualVolumeUID", "UI", "U", ""},
	{"(3010,000F)", "ConceptualVolumeCombinationDescription", "ST", "Z", "D:C"},
	{"(3010,0013)", "ConstituentConceptualVolumeUID", "UI", "U", ""},
	{"(3010,0015)", "SourceConceptualVolumeUID", "UI", "U", ""},
	{"(3010,0017)", "ConceptualVolumeDescription", "ST", "Z", "D:C"},
	{"(3010,001B)", "DeviceAlternateIdentifier", "UC", "Z", ""},
	{"(3010,002D)", "DeviceLabel", "LO", "D", "V:K"},
	{"(3010,0031)", "ReferencedFiducialsUID", "UI", "U", ""},
	{"(3010,0033)", "UserContentLabel", "SH", "D", "D:C"},
	{"(3010,0034)", "UserContentLongLabel", "LO", "D", "D:C"},
	{"(3010,0035)", "EntityLabel", "SH", "D", "D:C"},
	{"(3010,0036)", "EntityName", "LO", "X", "D:C"},
	{"(3010,0037)", "EntityDescription", "ST", "X", "D:C"},
	{"(3010,0038)", "EntityLongLabel", "LO", "D", "D:C"},
	{"(3010,003B)", "RTTreatmentPhaseUID", "UI", "U", ""},
	{"(3010,0043)", "ManufacturerDeviceIdentifier", "ST", "Z", "V:K"},
	{"(3010,004C)", "IntendedPhaseStartDate", "DA", "X/D", "L:C"},
	{"(3010,004D)", "IntendedPhaseEndDate", "DA", "X/D", "L:C"},
	{"(3010,0054)", "RTPrescriptionLabel", "LO", "D", "D:C"},
	{"(3010,0056)", "RTTreatmentApproachLabel", "LO", "X/D", "D:C"},
	{"(3010,005A)", "RTPhysicianIntentNarrative", "UT", "Z", "D:C"},
	{"(3010,005C)", "ReasonForSuperseding", "ST", "Z", "D:C"},
	{"(3010,0061)", "PriorTreatmentDoseDescription", "UT", "X", "D:C"},
	{"(3010,006E)", "DosimetricObjectiveUID", "UI", "U", ""},
	{"(3010,006F)", "ReferencedDosimetricObjectiveUID", "UI", "U", ""},
	{"(3010,0077)", "TreatmentSite", "LO", "D", "D:C"},
	{"(3010,007A)", "TreatmentTechniqueNotes", "UT", "Z", "D:C"},
	{"(3010,007B)", "PrescriptionNotes", "UT", "Z", "D:C"},
	{"(3010,007F)", "FractionationNotes", "UT", "Z", "D:C"},
	{"(3010,0081)", "PrescriptionNotesSequence", "SQ", "Z", "D:C"},
	{"(4000,0010)", "Arbitrary", "LT", "X", ""},
	{"(4000,4000)", "TextComments", "LT", "X", ""},
	{"(4008,0042)", "ResultsIDIssuer", "LO", "X", ""},
	{"(4008,0102)", "InterpretationRecorder", "PN", "X", ""},
	{"(4008,010A)", "InterpretationTranscriber", "PN", "X", ""},
	{"(4008,010B)", "InterpretationText", "ST", "X", "D:C"},
	{"(4008,010C)", "InterpretationAuthor", "PN", "X", ""},
	{"(4008,0111)", "InterpretationApproverSequence", "SQ", "X", ""},
	{"(4008,0114)", "PhysicianApprovingInterpretation", "PN", "X", ""},
	{"(4008,0115)", "InterpretationDiagnosisDescription", "LT", "X", "D:C"},
	{"(4008,0118)", "ResultsDistributionListSequence", "SQ", "X", ""},
	{"(4008,0119)", "DistributionName", "PN", "X", ""},
	{"(4008,011A)", "DistributionAddress", "LO", "X", ""},
	{"(4008,0202)", "InterpretationIDIssuer", "LO", "X", ""},
	{"(4008,0300)", "Impressions", "ST", "X", "D:C"},
	{"(4008,4000)", "ResultsComments", "ST", "X", "D:C"},
	{"(50xx,xxxx)", "CurveData", "OB", "X", ""},
	{"(60xx,3000)", "OverlayData", "OB", "X", ""},
	{"(60xx,4000)", "OverlayComments", "LT", "X", ""},
	{"(FFFA,FFFA)", "DigitalSignaturesSequence", "SQ", "X", ""},
	{"(FFFC,FFFC)", "DataSetTrailingPadding", "OB", "X", ""},
}
