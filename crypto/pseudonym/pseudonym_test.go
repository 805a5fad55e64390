package pseudonym

import (
	"bytes"
	"regexp"
	"testing"
)

func keyer(t *testing.T, b byte) *Keyer {
	t.Helper()
	k, err := New(bytes.Repeat([]byte{b}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestTokensAreKeyedConsistentAndSeparated(t *testing.T) {
	a, b := keyer(t, 1), keyer(t, 2)
	if a.Token(KindPatientID, "4711") != a.Token(KindPatientID, "4711") {
		t.Error("same input, different tokens")
	}
	if a.Token(KindPatientID, "4711") == b.Token(KindPatientID, "4711") {
		t.Error("different keys, same token")
	}
	if a.Token(KindPatientID, "4711") == a.Token(KindAccession, "4711") {
		t.Error("kinds not separated")
	}
	if tok := a.Token(KindName, "DOE^JANE"); !regexp.MustCompile(`^[A-Z2-7]{16}$`).MatchString(tok) {
		t.Errorf("token %q", tok)
	}
	for _, n := range []int{1, 8, 16, 52} {
		if got := a.TokenLen(KindName, "x", n); len(got) != n {
			t.Errorf("TokenLen(%d) = %q", n, got)
		}
	}
}

func TestDateShift(t *testing.T) {
	k := keyer(t, 3)
	seen := map[int]bool{}
	for _, p := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		d := k.ShiftDays(p)
		if d == 0 || d < -365 || d > 365 {
			t.Fatalf("shift %d out of range", d)
		}
		if d != k.ShiftDays(p) {
			t.Fatal("shift not consistent")
		}
		seen[d] = true
	}
	if len(seen) < 4 {
		t.Errorf("shifts barely vary: %v", seen)
	}
	// Intervals between one patient's dates are kept.
	d1, _ := k.ShiftDate("p1", "20240101")
	d2, _ := k.ShiftDate("p1", "20240111")
	if d1 == "20240101" || d2 == "" {
		t.Fatalf("%q %q", d1, d2)
	}
	if got, _ := k.ShiftDate("p1", "20240111093000"); got[:8] != d2 || got[8:] != "093000" {
		t.Errorf("DTM shift = %q", got)
	}
	for _, bad := range []string{"", "2024", "2024-01-01", "20241301"} {
		if _, err := k.ShiftDate("p1", bad); err == nil {
			t.Errorf("ShiftDate(%q) accepted", bad)
		}
	}
}

func TestUID(t *testing.T) {
	k := keyer(t, 4)
	valid := regexp.MustCompile(`^2\.25\.(0|[1-9][0-9]*)$`)
	in := "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
	u := k.UID(in)
	if !valid.MatchString(u) || len(u) > 64 {
		t.Fatalf("UID %q", u)
	}
	if u != k.UID(in+"\x00") {
		t.Error("padding changes the UID")
	}
	if u == k.UID(in+"1") || u == keyer(t, 5).UID(in) {
		t.Error("UIDs collide")
	}
}

func FuzzShiftDate(f *testing.F) {
	k, _ := New(make([]byte, KeySize))
	f.Add("p", "20240229")
	f.Fuzz(func(t *testing.T, p, v string) {
		out, err := k.ShiftDate(p, v)
		if err == nil && len(out) != len(v) {
			t.Fatalf("%q -> %q changes length", v, out)
		}
	})
}
