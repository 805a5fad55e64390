package mask

import "testing"

func TestGeneralizeValue(t *testing.T) {
	tests := []struct {
		kind, in string
		ref      int
		want     string
		ok       bool
	}{
		{GeneralizeYear, "19650601", 0, "1965", true},
		{GeneralizeYear, "200705100925-0500", 0, "2007", true},
		{GeneralizeYear, "1965-06-01", 0, "1965", true},
		{GeneralizeYear, "2021-03-04T10:11:12Z", 0, "2021", true},
		{GeneralizeYear, "1965", 0, "1965", true},
		{GeneralizeYear, "196506", 0, "1965", true},
		{GeneralizeYear, "19650", 0, "", false},
		{GeneralizeYear, "June 1st", 0, "", false},
		{GeneralizeYear, "00000101", 0, "", false},
		{GeneralizeYear, "", 0, "", true},
		{GeneralizeBirthYear, "19280314", 2024, "1934", true},
		{GeneralizeBirthYear, "19350314", 2024, "1935", true},
		{GeneralizeBirthYear, "1928-03-14", 0, "1928", true},
		{GeneralizeZIP, "15226", 0, "152", true},
		{GeneralizeZIP, "15226-1107", 0, "152", true},
		{GeneralizeZIP, "152261107", 0, "152", true},
		{GeneralizeZIP, "03601", 0, "000", true},
		{GeneralizeZIP, "89301", 0, "000", true},
		{GeneralizeZIP, "K1A 0B1", 0, "", false},
		{GeneralizeZIP, "1522", 0, "", false},
		{GeneralizeAge, "47", 0, "40", true},
		{GeneralizeAge, "047Y", 0, "040Y", true},
		{GeneralizeAge, "93", 0, "90", true},
		{GeneralizeAge, "7", 0, "0", true},
		{GeneralizeAge, "47 years", 0, "", false},
		{"", "15226", 0, "152", true},
		{"", "19650601", 0, "1965", true},
		{"", "1965-06-01", 0, "1965", true},
		{"", "93", 0, "90", true},
		{"", "Pittsburgh", 0, "", false},
		{"bogus", "1", 0, "", false},
	}
	for _, tt := range tests {
		got, ok := GeneralizeValue(tt.kind, tt.in, tt.ref)
		if got != tt.want || ok != tt.ok {
			t.Errorf("GeneralizeValue(%q, %q, %d) = %q, %v; want %q, %v", tt.kind, tt.in, tt.ref, got, ok, tt.want, tt.ok)
		}
	}
}
