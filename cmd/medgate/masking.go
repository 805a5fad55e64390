package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/medgate/medgate/crypto/keys"
	"github.com/medgate/medgate/crypto/pseudonym"
	"github.com/medgate/medgate/posture"
	"github.com/medgate/medgate/proxy"
	"github.com/medgate/medgate/proxy/dicom"
	"github.com/medgate/medgate/proxy/hl7"
	"github.com/medgate/medgate/proxy/httpx"
	"github.com/medgate/medgate/proxy/mask"
)

// codecs are the protocols a route can name, each with the codec that
// masks it. Every one needs the keyed pseudonym maker.
var codecs = map[string]proxy.Codec{}

func init() {
	for name, c := range rawCodecs {
		codecs[name] = func(p *mask.Profile, env mask.Env, inbound bool) (mask.Filter, mask.Filter, error) {
			if env.Keyer == nil {
				return nil, nil, errors.New("no pseudonym key: masking needs MEDGATE_KEYRING set to a file keyring, from which the key is derived")
			}
			return c(p, env, inbound)
		}
	}
}

var rawCodecs = map[string]proxy.Codec{
	"dicom": func(p *mask.Profile, env mask.Env, inbound bool) (mask.Filter, mask.Filter, error) {
		if !p.DICOMBasic && len(p.DICOM) == 0 {
			return nil, nil, fmt.Errorf("masking profile %s has no DICOM rules; it would let DICOM data cross unmasked", p.Name)
		}
		if inbound {
			// Beside the archive: remember what each pseudonym and remapped
			// UID stands for, so a peer can query by pseudonym and retrieve
			// by remapped UID. The index stays in this sidecar's memory, in
			// the data's own jurisdiction.
			return dicom.CodecWithIndex(dicomIndex)(p, env)
		}
		return dicom.Codec(p, env)
	},
	"http": func(p *mask.Profile, env mask.Env, inbound bool) (mask.Filter, mask.Filter, error) {
		if len(p.FHIR) == 0 && !p.DICOMBasic && len(p.DICOM) == 0 {
			return nil, nil, fmt.Errorf("masking profile %s has neither FHIR nor DICOM rules; it would let FHIR or DICOMweb data cross unmasked", p.Name)
		}
		cfg := httpx.Config{}
		if inbound {
			// DICOMweb beside the archive shares the DIMSE index: a peer
			// retrieves by the UIDs and pseudonyms either protocol sent.
			cfg.Index = dicomIndex
		}
		c, err := httpx.New(p, env, cfg)
		if err != nil {
			return nil, nil, err
		}
		if inbound { // beside the server: its responses leave
			req, resp := c.Server()
			return resp, req, nil
		}
		req, resp := c.Client() // beside the client: its requests leave
		return req, resp, nil
	},
	"hl7": func(p *mask.Profile, env mask.Env, inbound bool) (mask.Filter, mask.Filter, error) {
		if len(p.HL7) == 0 {
			return nil, nil, fmt.Errorf("masking profile %s has no HL7 rules; it would let HL7 data cross unmasked", p.Name)
		}
		c, err := hl7.New(p, env, hl7.Config{})
		if err != nil {
			return nil, nil, err
		}
		if inbound { // beside the receiver: its answers leave, ACKs unchanged
			return c.Replies, nil, nil
		}
		return c.Filter, nil, nil
	},
}

// dicomIndex maps the pseudonyms and remapped UIDs this sidecar has sent
// back to what they stand for (bounded; in memory only).
var dicomIndex = dicom.NewIndex(0)

// pseudonymLabel names the keyring-derived key of keyed pseudonyms; the
// same keyring gives the same pseudonyms in every sidecar.
const pseudonymLabel = "pseudonym/v1"

// maskEnv derives the pseudonym key from the keyring when it can.
func maskEnv(kr keys.Keyring) (mask.Env, error) {
	d, ok := kr.(interface{ Derive(string) ([]byte, error) })
	if !ok {
		return mask.Env{}, errors.New("this keyring cannot derive a pseudonym key; profiles with pseudonyms, date shifts or UID remaps will refuse sessions")
	}
	key, err := d.Derive(pseudonymLabel)
	if err != nil {
		return mask.Env{}, err
	}
	k, err := pseudonym.New(key)
	clear(key)
	if err != nil {
		return mask.Env{}, err
	}
	return mask.Env{Keyer: k}, nil
}

// profileSource resolves masking profiles: the policy's MaskingProfile
// documents first, then the built-in ones.
func profileSource(policy func() *posture.Policy) proxy.ProfileSource {
	return func(name string) (*mask.Profile, error) {
		if policy != nil {
			if pol := policy(); pol != nil {
				if mp, ok := pol.MaskingProfile(name); ok {
					return parsePolicyProfile(mp)
				}
			}
		}
		if p, ok := mask.Builtin(name); ok {
			return p, nil
		}
		return nil, fmt.Errorf("no masking profile %q in the policy or built in", name)
	}
}

// parsePolicyProfile reads a policy MaskingProfile's spec; its reference is
// documentation.
func parsePolicyProfile(mp *posture.MaskingProfile) (*mask.Profile, error) {
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(mp.Spec, &spec); err != nil {
		return nil, fmt.Errorf("masking profile %s: %w", mp.Name, err)
	}
	delete(spec, "reference")
	if len(spec) == 0 {
		if p, ok := mask.Builtin(mp.Name); ok {
			return p, nil // a document that only names a built-in profile
		}
	}
	b, _ := json.Marshal(spec)
	p, err := mask.ParseProfile(mp.Name, b)
	if err != nil {
		return nil, err
	}
	if len(p.DICOM) == 0 && len(p.HL7) == 0 && len(p.FHIR) == 0 && !p.DICOMBasic {
		return nil, fmt.Errorf("masking profile %s masks nothing: give it a base (%s) or rules", mp.Name, strings.Join(mask.BuiltinNames(), ", "))
	}
	return p, nil
}

// checkPolicyProfiles parses every masking profile a policy defines, so a
// bad one stops the sidecar at start rather than refusing sessions later.
func checkPolicyProfiles(p *posture.Policy) error {
	var errs []error
	for i := range p.MaskingProfiles {
		mp := &p.MaskingProfiles[i]
		if _, err := parsePolicyProfile(mp); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", mp.Origin.File, mp.Origin.Line, err))
		}
	}
	return errors.Join(errs...)
}
