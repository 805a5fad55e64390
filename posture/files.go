package posture

import (
	"errors"
	"fmt"
)

// File is a policy file held in memory: a name for errors and its YAML.
type File struct {
	Name string
	Data []byte
}

// ParseFiles compiles the documents of several files as one policy, as
// LoadFiles does with files on disk. Errors name each file by its Name.
func ParseFiles(files ...File) (*Policy, error) {
	if len(files) == 0 {
		return nil, errors.New("posture: parse policy: no files given")
	}
	pf := make([]policyFile, 0, len(files))
	var errs []error
	for _, f := range files {
		if len(f.Data) > MaxPolicyFileSize {
			errs = append(errs, &FieldError{File: f.Name, Msg: fmt.Sprintf("larger than %d bytes", MaxPolicyFileSize)})
			continue
		}
		pf = append(pf, policyFile{name: f.Name, data: f.Data})
	}
	if len(errs) > 0 {
		return nil, invalid(errs)
	}
	return compile(pf)
}
