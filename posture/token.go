package posture

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	// MaxTokenSize bounds a posture token in its compact serialization.
	// Verify rejects larger tokens before parsing them, and Issue refuses to
	// produce one.
	MaxTokenSize = 8 << 10

	// TokenType is the JWS "typ" header every posture token carries. It
	// keeps other JWTs an issuer signs with the same key from passing as
	// posture tokens.
	TokenType = "medgate-posture+jwt"

	// ClockSkew is how far in the future a token's "iat" may lie and still
	// be accepted. Expiry gets no such grace.
	ClockSkew = 30 * time.Second
)

// Algorithms are the only JWS algorithms a posture token may use. "none",
// the HMAC family and RSA are refused before any key is looked up.
var Algorithms = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA}

// OSInfo names a device's operating system the way os-release does: Name
// is the lower-case ID ("ubuntu", "rhel", "windows", "macos") and Version
// the dotted VERSION_ID ("22.04", "9.4", "10.0.19045").
type OSInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// EDRStatus describes the device's endpoint detection and response agent.
type EDRStatus struct {
	Running bool   `json:"running"`
	Name    string `json:"name,omitempty"`
	// LastHeartbeat is when the agent last reported to its console; zero
	// when unknown.
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
}

// Claims are the contents of a posture token. Pointer and zero-valued
// posture fields mean the issuer did not say; a profile that checks such a
// field denies with ReasonClaimMissing. TOKEN.md gives the wire format.
type Claims struct {
	// Issuer ("iss") names the issuer; it must equal the name of the
	// trusted issuer whose key signed the token.
	Issuer string
	// Subject ("sub") is the SPIFFE ID of the workload holding the token.
	Subject spiffeid.ID
	// DeviceID ("device_id") identifies the device to the issuer. It goes
	// into access events, so it must not be or contain a person's name.
	DeviceID string
	// ID ("jti") is optional.
	ID string

	OS            *OSInfo
	Kernel        string
	DiskEncrypted *bool
	EDR           *EDRStatus
	Firewall      *bool
	ScreenLock    *bool
	// LastPatch is when the last OS update was installed; zero when absent.
	LastPatch time.Time

	IssuedAt time.Time
	Expiry   time.Time
	// SPKIHash ("cnf" {"x5t#S256"}) is the SHA-256 of the holder SVID's
	// SubjectPublicKeyInfo, see SPKIHash.
	SPKIHash [32]byte
}

// Summary returns what an access event records about the device.
func (c *Claims) Summary() PostureSummary {
	if c == nil {
		return PostureSummary{}
	}
	s := PostureSummary{Issuer: c.Issuer, DeviceID: c.DeviceID}
	if c.OS != nil {
		s.OSName, s.OSVersion = c.OS.Name, c.OS.Version
	}
	return s
}

// SPKIHash returns the SHA-256 of cert's SubjectPublicKeyInfo, the value a
// posture token's "cnf" claim binds to.
func SPKIHash(cert *x509.Certificate) [32]byte {
	return sha256.Sum256(cert.RawSubjectPublicKeyInfo)
}

// wireClaims is the JSON shape of Claims. Times are NumericDate seconds.
type wireClaims struct {
	Issuer        string          `json:"iss,omitempty"`
	Subject       string          `json:"sub,omitempty"`
	ID            string          `json:"jti,omitempty"`
	DeviceID      string          `json:"device_id,omitempty"`
	OS            *OSInfo         `json:"os,omitempty"`
	Kernel        string          `json:"kernel,omitempty"`
	DiskEncrypted *bool           `json:"disk_encrypted,omitempty"`
	EDR           *wireEDR        `json:"edr,omitempty"`
	Firewall      *bool           `json:"firewall,omitempty"`
	ScreenLock    *bool           `json:"screen_lock,omitempty"`
	LastPatch     *numericDate    `json:"last_patch,omitempty"`
	IssuedAt      *numericDate    `json:"iat,omitempty"`
	Expiry        *numericDate    `json:"exp,omitempty"`
	NotBefore     *numericDate    `json:"nbf,omitempty"`
	Confirmation  *wireCnf        `json:"cnf,omitempty"`
	Audience      json.RawMessage `json:"aud,omitempty"`
}

type wireEDR struct {
	Running       *bool        `json:"running,omitempty"`
	Name          string       `json:"name,omitempty"`
	LastHeartbeat *numericDate `json:"last_heartbeat,omitempty"`
}

type wireCnf struct {
	X5tS256 string `json:"x5t#S256,omitempty"`
}

// numericDate is a JWT NumericDate: seconds since the epoch, fractions
// allowed on input.
type numericDate int64

// maxNumericDate keeps decoded times inside what time.Time and int64
// nanoseconds arithmetic handle (the year 2262).
const maxNumericDate = math.MaxInt64/int64(time.Second) - 1

func (n *numericDate) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return errors.New("not a number")
	}
	if math.IsNaN(f) || f < 0 || f > float64(maxNumericDate) {
		return errors.New("out of range")
	}
	*n = numericDate(f)
	return nil
}

func (n numericDate) time() time.Time { return time.Unix(int64(n), 0).UTC() }

func newDate(t time.Time) *numericDate {
	if t.IsZero() {
		return nil
	}
	d := numericDate(t.Unix())
	return &d
}

func dateTime(d *numericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.time()
}

// MarshalJSON encodes the claims in the token format of TOKEN.md.
func (c Claims) MarshalJSON() ([]byte, error) {
	w := wireClaims{
		Issuer:        c.Issuer,
		ID:            c.ID,
		DeviceID:      c.DeviceID,
		OS:            c.OS,
		Kernel:        c.Kernel,
		DiskEncrypted: c.DiskEncrypted,
		Firewall:      c.Firewall,
		ScreenLock:    c.ScreenLock,
		LastPatch:     newDate(c.LastPatch),
		IssuedAt:      newDate(c.IssuedAt),
		Expiry:        newDate(c.Expiry),
	}
	if !c.Subject.IsZero() {
		w.Subject = c.Subject.String()
	}
	if c.EDR != nil {
		running := c.EDR.Running
		w.EDR = &wireEDR{Running: &running, Name: c.EDR.Name, LastHeartbeat: newDate(c.EDR.LastHeartbeat)}
	}
	if c.SPKIHash != ([32]byte{}) {
		w.Confirmation = &wireCnf{X5tS256: base64.RawURLEncoding.EncodeToString(c.SPKIHash[:])}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes claims in the token format of TOKEN.md. It does
// not require any claim; Verify does.
func (c *Claims) UnmarshalJSON(b []byte) error {
	d, _, _, err := decodeClaims(b)
	if err != nil {
		return fmt.Errorf("posture: claims: %w", err)
	}
	*c = *d
	return nil
}

// decodeClaims decodes a verified payload. It returns the claims it could
// read and the names of required claims that are absent.
func decodeClaims(payload []byte) (*Claims, *numericDate, []string, error) {
	var w wireClaims
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&w); err != nil {
		return nil, nil, nil, errors.New("claims are not a JSON object of the documented shape")
	}
	if dec.More() {
		return nil, nil, nil, errors.New("trailing data after claims")
	}
	c := &Claims{
		Issuer:        w.Issuer,
		ID:            w.ID,
		DeviceID:      w.DeviceID,
		OS:            w.OS,
		Kernel:        w.Kernel,
		DiskEncrypted: w.DiskEncrypted,
		Firewall:      w.Firewall,
		ScreenLock:    w.ScreenLock,
		LastPatch:     dateTime(w.LastPatch),
		IssuedAt:      dateTime(w.IssuedAt),
		Expiry:        dateTime(w.Expiry),
	}
	var missing []string
	if w.Issuer == "" {
		missing = append(missing, "iss")
	}
	if w.Subject == "" {
		missing = append(missing, "sub")
	} else {
		id, err := spiffeid.FromString(w.Subject)
		if err != nil {
			return nil, nil, nil, errors.New("claim sub is not a SPIFFE ID")
		}
		c.Subject = id
	}
	if w.DeviceID == "" {
		missing = append(missing, "device_id")
	}
	if w.IssuedAt == nil {
		missing = append(missing, "iat")
	}
	if w.Expiry == nil {
		missing = append(missing, "exp")
	}
	if w.Confirmation == nil || w.Confirmation.X5tS256 == "" {
		missing = append(missing, "cnf.x5t#S256")
	} else {
		h, err := base64.RawURLEncoding.DecodeString(w.Confirmation.X5tS256)
		if err != nil || len(h) != sha256.Size {
			return nil, nil, nil, errors.New("claim cnf.x5t#S256 is not a base64url SHA-256")
		}
		copy(c.SPKIHash[:], h)
	}
	if w.OS != nil && (w.OS.Name == "" || w.OS.Version == "") {
		c.OS = nil
		missing = append(missing, "os.name/os.version")
	}
	if w.EDR != nil {
		if w.EDR.Running == nil {
			missing = append(missing, "edr.running")
		} else {
			c.EDR = &EDRStatus{Running: *w.EDR.Running, Name: w.EDR.Name, LastHeartbeat: dateTime(w.EDR.LastHeartbeat)}
		}
	}
	return c, w.NotBefore, missing, nil
}

// TokenError says why a posture token was refused. Reasons holds every
// failure found; once the signature has verified that may be several (an
// expired token replayed by another identity gives three). Error never
// contains the token or its claims' values beyond the issuer and IDs.
type TokenError struct {
	Reasons []Reason
	detail  string
}

func (e *TokenError) Error() string {
	rs := make([]string, len(e.Reasons))
	for i, r := range e.Reasons {
		rs[i] = string(r)
	}
	return "posture: token refused (" + strings.Join(rs, ", ") + "): " + e.detail
}

// clip shortens a peer-supplied string for an error message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}

func tokenErr(r Reason, format string, args ...any) *TokenError {
	return &TokenError{Reasons: []Reason{r}, detail: fmt.Sprintf(format, args...)}
}

// Issuer is a posture issuer a profile trusts: the name its tokens carry
// in "iss" and its public keys. Every key needs a "kid" and must be an
// EC P-256 (ES256) or Ed25519 (EdDSA) public key.
type Issuer struct {
	Name string             `json:"name"`
	JWKS jose.JSONWebKeySet `json:"jwks"`
}

// TrustedIssuers is the compiled set of keys Verify accepts. It is
// immutable and safe for concurrent use.
type TrustedIssuers struct {
	byKID map[string]trustedKey
}

type trustedKey struct {
	issuer string
	alg    jose.SignatureAlgorithm
	key    any // *ecdsa.PublicKey or ed25519.PublicKey
}

// NewTrustedIssuers checks issuers and indexes their keys by key ID. It
// refuses private keys (a policy must never carry one), keys of other
// types, keys without a "kid" and a "kid" used twice.
func NewTrustedIssuers(issuers ...Issuer) (*TrustedIssuers, error) {
	t := &TrustedIssuers{byKID: map[string]trustedKey{}}
	var errs []error
	for i, iss := range issuers {
		if iss.Name == "" {
			errs = append(errs, fmt.Errorf("posture: issuer %d: empty name", i))
		}
		if len(iss.JWKS.Keys) == 0 {
			errs = append(errs, fmt.Errorf("posture: issuer %q: no keys", iss.Name))
		}
		for j, k := range iss.JWKS.Keys {
			tk, err := checkJWK(k)
			if err != nil {
				errs = append(errs, fmt.Errorf("posture: issuer %q: key %d: %w", iss.Name, j, err))
				continue
			}
			if _, dup := t.byKID[k.KeyID]; dup {
				errs = append(errs, fmt.Errorf("posture: issuer %q: key %d: kid %q used twice", iss.Name, j, k.KeyID))
				continue
			}
			tk.issuer = iss.Name
			t.byKID[k.KeyID] = tk
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

func checkJWK(k jose.JSONWebKey) (trustedKey, error) {
	var tk trustedKey
	switch pub := k.Key.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return trustedKey{}, errors.New("EC key not on P-256")
		}
		tk = trustedKey{alg: jose.ES256, key: pub}
	case ed25519.PublicKey:
		tk = trustedKey{alg: jose.EdDSA, key: pub}
	case *ecdsa.PrivateKey, ed25519.PrivateKey:
		return trustedKey{}, errors.New("a private key; give only the public key")
	case []byte:
		return trustedKey{}, errors.New("a symmetric key; posture tokens are signed with EC P-256 or Ed25519 keys")
	default:
		return trustedKey{}, fmt.Errorf("key type %T; want EC P-256 or Ed25519", k.Key)
	}
	if k.KeyID == "" {
		return trustedKey{}, errors.New("no kid")
	}
	if k.Use != "" && k.Use != "sig" {
		return trustedKey{}, fmt.Errorf("use %q, want \"sig\"", k.Use)
	}
	if k.Algorithm != "" && k.Algorithm != string(tk.alg) {
		return trustedKey{}, fmt.Errorf("alg %q does not fit the key, want %q", k.Algorithm, tk.alg)
	}
	return tk, nil
}

// Verify checks a compact JWS posture token and returns its claims. It
// checks, in order: size, serialization, algorithm (ES256 or EdDSA only),
// "typ", that a trusted issuer holds the key named by "kid", the
// signature, that "iss" names that key's issuer; then, all together, the
// required claims, expiry, "iat" and "nbf" against now (with ClockSkew),
// that "sub" equals peerID and that "cnf" binds the token to peerSPKIHash.
//
// Errors are *TokenError. When the signature verified but later checks
// failed, Verify returns the claims as well as the error, so an access
// event can name the device; never treat them as trusted then.
//
// Verify does not apply a profile's requirements; see Profile.Check.
func Verify(token []byte, trusted *TrustedIssuers, peerID spiffeid.ID, peerSPKIHash [32]byte, now time.Time) (*Claims, error) {
	if len(token) == 0 {
		return nil, tokenErr(ReasonTokenMissing, "empty token")
	}
	if len(token) > MaxTokenSize {
		return nil, tokenErr(ReasonTokenMalformed, "token of %d bytes exceeds %d", len(token), MaxTokenSize)
	}
	if trusted == nil || len(trusted.byKID) == 0 {
		return nil, tokenErr(ReasonTokenUnknownSigner, "no trusted issuers")
	}
	jws, err := jose.ParseSignedCompact(string(token), Algorithms)
	if err != nil {
		var alg *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &alg) {
			return nil, tokenErr(ReasonTokenMalformed, "algorithm %q not accepted, want ES256 or EdDSA", clip(string(alg.Got)))
		}
		return nil, tokenErr(ReasonTokenMalformed, "not a compact JWS")
	}
	if len(jws.Signatures) != 1 {
		return nil, tokenErr(ReasonTokenMalformed, "want exactly one signature")
	}
	hdr := jws.Signatures[0].Protected
	if typ, _ := hdr.ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(typ, TokenType) {
		return nil, tokenErr(ReasonTokenMalformed, "header typ must be %q", TokenType)
	}
	if hdr.KeyID == "" {
		return nil, tokenErr(ReasonTokenUnknownSigner, "header names no kid")
	}
	tk, ok := trusted.byKID[hdr.KeyID]
	if !ok {
		return nil, tokenErr(ReasonTokenUnknownSigner, "no trusted issuer holds kid %q", clip(hdr.KeyID))
	}
	if hdr.Algorithm != string(tk.alg) {
		return nil, tokenErr(ReasonTokenBadSignature, "algorithm %q does not fit key %q", hdr.Algorithm, hdr.KeyID)
	}
	payload, err := jws.Verify(tk.key)
	if err != nil {
		return nil, tokenErr(ReasonTokenBadSignature, "signature does not verify under key %q", hdr.KeyID)
	}
	c, nbf, missing, err := decodeClaims(payload)
	if err != nil {
		return nil, tokenErr(ReasonTokenMalformed, "%v", err)
	}
	if c.Issuer != "" && c.Issuer != tk.issuer {
		return nil, tokenErr(ReasonTokenUnknownSigner, "key %q belongs to issuer %q, token names %q", hdr.KeyID, tk.issuer, clip(c.Issuer))
	}
	te := &TokenError{}
	var details []string
	fail := func(r Reason, format string, args ...any) {
		if !slices.Contains(te.Reasons, r) {
			te.Reasons = append(te.Reasons, r)
		}
		details = append(details, fmt.Sprintf(format, args...))
	}
	if len(missing) > 0 {
		fail(ReasonClaimMissing, "missing claims %s", strings.Join(missing, ", "))
	}
	if !c.Expiry.IsZero() && !now.Before(c.Expiry) {
		fail(ReasonTokenExpired, "expired %s ago", now.Sub(c.Expiry).Truncate(time.Second))
	}
	if !c.Expiry.IsZero() && !c.IssuedAt.IsZero() && !c.Expiry.After(c.IssuedAt) {
		fail(ReasonTokenMalformed, "exp not after iat")
	}
	if c.IssuedAt.After(now.Add(ClockSkew)) {
		fail(ReasonTokenNotYetValid, "iat in the future")
	}
	if nbf != nil && nbf.time().After(now.Add(ClockSkew)) {
		fail(ReasonTokenNotYetValid, "nbf in the future")
	}
	if !c.Subject.IsZero() && c.Subject != peerID {
		fail(ReasonTokenWrongSubject, "token subject %s is not peer %s", c.Subject, peerID)
	}
	if c.SPKIHash != ([32]byte{}) && c.SPKIHash != peerSPKIHash {
		fail(ReasonTokenWrongSVID, "token bound to another SVID key")
	}
	if len(te.Reasons) > 0 {
		te.detail = strings.Join(details, "; ")
		return c, te
	}
	return c, nil
}

// Signer signs posture tokens; it backs the development issuer. It is
// safe for concurrent use.
type Signer struct {
	kid    string
	alg    jose.SignatureAlgorithm
	pub    jose.JSONWebKey
	signer jose.Signer
}

// NewSigner returns a Signer for an *ecdsa.PrivateKey on P-256 (ES256) or
// an ed25519.PrivateKey (EdDSA). keyID becomes the tokens' "kid" and must
// be unique among the issuer's keys.
func NewSigner(key crypto.Signer, keyID string) (*Signer, error) {
	if keyID == "" {
		return nil, errors.New("posture: signer: empty key id")
	}
	var alg jose.SignatureAlgorithm
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("posture: signer: EC key not on P-256")
		}
		alg = jose.ES256
	case ed25519.PrivateKey:
		alg = jose.EdDSA
	default:
		return nil, fmt.Errorf("posture: signer: key type %T, want *ecdsa.PrivateKey (P-256) or ed25519.PrivateKey", key)
	}
	opts := (&jose.SignerOptions{}).WithType(TokenType)
	js, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: keyID}}, opts)
	if err != nil {
		return nil, fmt.Errorf("posture: signer: %w", err)
	}
	return &Signer{
		kid:    keyID,
		alg:    alg,
		pub:    jose.JSONWebKey{Key: key.Public(), KeyID: keyID, Algorithm: string(alg), Use: "sig"},
		signer: js,
	}, nil
}

// KeyID returns the signer's "kid".
func (s *Signer) KeyID() string { return s.kid }

// PublicJWK returns the public key as a JWK, for an issuer's JWKS.
func (s *Signer) PublicJWK() jose.JSONWebKey { return s.pub }

// Issue signs claims as a posture token. It refuses claims a verifier
// would reject for their shape: no issuer, subject, device ID, iat or
// exp, exp not after iat, or no SPKI binding.
func Issue(s *Signer, c Claims) ([]byte, error) {
	if s == nil {
		return nil, errors.New("posture: issue: nil signer")
	}
	var missing []string
	if c.Issuer == "" {
		missing = append(missing, "iss")
	}
	if c.Subject.IsZero() {
		missing = append(missing, "sub")
	}
	if c.DeviceID == "" {
		missing = append(missing, "device_id")
	}
	if c.IssuedAt.IsZero() {
		missing = append(missing, "iat")
	}
	if c.Expiry.IsZero() {
		missing = append(missing, "exp")
	}
	if c.SPKIHash == ([32]byte{}) {
		missing = append(missing, "cnf.x5t#S256")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("posture: issue: missing claims %s", strings.Join(missing, ", "))
	}
	if !c.Expiry.Truncate(time.Second).After(c.IssuedAt.Truncate(time.Second)) {
		return nil, errors.New("posture: issue: exp must be after iat")
	}
	if c.OS != nil && (c.OS.Name == "" || c.OS.Version == "") {
		return nil, errors.New("posture: issue: os needs name and version")
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("posture: issue: %w", err)
	}
	jws, err := s.signer.Sign(payload)
	if err != nil {
		return nil, fmt.Errorf("posture: issue: sign: %w", err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		return nil, fmt.Errorf("posture: issue: %w", err)
	}
	if len(out) > MaxTokenSize {
		return nil, fmt.Errorf("posture: issue: token of %d bytes exceeds %d", len(out), MaxTokenSize)
	}
	return []byte(out), nil
}

// PeekExpiry returns a token's expiry without verifying it. It is for the
// token's holder, to know when to send a fresh one; it is never a trust
// decision.
func PeekExpiry(token []byte) (time.Time, error) {
	if len(token) == 0 || len(token) > MaxTokenSize {
		return time.Time{}, tokenErr(ReasonTokenMalformed, "token of %d bytes", len(token))
	}
	jws, err := jose.ParseSignedCompact(string(token), Algorithms)
	if err != nil {
		return time.Time{}, tokenErr(ReasonTokenMalformed, "not a compact JWS")
	}
	c, _, _, err := decodeClaims(jws.UnsafePayloadWithoutVerification())
	if err != nil {
		return time.Time{}, tokenErr(ReasonTokenMalformed, "%v", err)
	}
	if c.Expiry.IsZero() {
		return time.Time{}, tokenErr(ReasonClaimMissing, "no exp")
	}
	return c.Expiry, nil
}
