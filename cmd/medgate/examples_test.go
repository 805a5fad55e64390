package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// knownVariables is every variable the sidecar reads.
func knownVariables() map[string]bool {
	known := map[string]bool{"SPIFFE_ENDPOINT_SOCKET": true}
	for _, f := range envFields(reflect.TypeOf(sidecarEnv{})) {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		known[envPrefix+name] = true
	}
	return known
}

func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("../../examples/kubernetes/*.yaml")
	type obj = map[string]any
	var docs []obj
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var d obj
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			docs = append(docs, d)
		}
	}
	get := func(v any, path ...any) any {
		for _, p := range path {
			switch k := p.(type) {
			case string:
				m, _ := v.(obj)
				v = m[k]
			case int:
				l, _ := v.([]any)
				if k >= len(l) {
					return nil
				}
				v = l[k]
			}
		}
		return v
	}
	known := knownVariables()
	var sawSidecar, sawPolicy bool
	for _, d := range docs {
		switch d["kind"] {
		case "Deployment":
			containers, _ := get(d, "spec", "template", "spec", "containers").([]any)
			if get(d, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
				t.Error("pod does not run as non-root")
			}
			for _, c := range containers {
				if get(c, "name") != "medgate" {
					continue
				}
				sawSidecar = true
				if img, _ := get(c, "image").(string); !strings.Contains(img, "medgate:") || strings.HasSuffix(img, ":latest") {
					t.Errorf("sidecar image %q: want a pinned medgate image", img)
				}
				ports := map[string]bool{}
				for _, p := range get(c, "ports").([]any) {
					ports[strings.Join([]string{toString(get(p, "containerPort")), toString(get(p, "protocol"))}, "/")] = true
				}
				for _, want := range []string{"8443/TCP", "8443/UDP", "9901/TCP"} {
					if !ports[want] {
						t.Errorf("sidecar does not expose %s", want)
					}
				}
				if get(c, "livenessProbe", "httpGet", "path") != "/healthz" || get(c, "readinessProbe", "httpGet", "path") != "/readyz" {
					t.Error("probes must use /healthz and /readyz")
				}
				sc := get(c, "securityContext")
				if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false || get(sc, "runAsNonRoot") != true ||
					get(sc, "capabilities", "drop", 0) != "ALL" {
					t.Errorf("sidecar security context: %v", sc)
				}
				if get(c, "resources", "limits", "memory") == nil {
					t.Error("sidecar has no memory limit")
				}
				for _, e := range get(c, "env").([]any) {
					if name := toString(get(e, "name")); !known[name] {
						t.Errorf("sidecar sets %s, which medgate does not read", name)
					}
				}
			}
		case "NetworkPolicy":
			sawPolicy = true
			for _, rule := range get(d, "spec", "ingress").([]any) {
				for _, p := range get(rule, "ports").([]any) {
					if port := toString(get(p, "port")); port != "8443" && port != "9901" {
						t.Errorf("NetworkPolicy opens port %s: only the sidecar's ports may be reachable", port)
					}
				}
			}
		}
	}
	if !sawSidecar || !sawPolicy {
		t.Errorf("manifests lack the sidecar (%v) or the NetworkPolicy (%v)", sawSidecar, sawPolicy)
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int:
		return strconv.Itoa(x)
	}
	return ""
}

func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../../examples/systemd/medgate-sidecar.service")
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			set[k] = v
		}
	}
	for k, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
		"AmbientCapabilities": "", "User": "medgate", "ExecStart": "/usr/local/bin/medgate sidecar", "KillSignal": "SIGTERM",
	} {
		if got, ok := set[k]; !ok || got != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	env, err := os.ReadFile("../../examples/systemd/sidecar.env")
	if err != nil {
		t.Fatal(err)
	}
	known := knownVariables()
	vars := map[string]string{}
	sc = bufio.NewScanner(bytes.NewReader(env))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		if !known[k] {
			t.Errorf("sidecar.env sets %s, which medgate does not read", k)
		}
		vars[k] = v
	}
	// The file is a valid configuration, apart from files that exist only
	// on the deployed host.
	if _, err := loadSidecarConfig(vars); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if strings.Contains(line, "MEDGATE_") && !strings.Contains(line, "no such file") {
				t.Errorf("sidecar.env: %s", strings.TrimSpace(line))
			}
		}
	}
}
