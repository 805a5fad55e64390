package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"
	"go.yaml.in/yaml/v3"

	"github.com/medgate/medgate/identity"
)

// controlPlaneVariables is every variable the control plane reads: its
// own, and PGPASSWORD, which the PostgreSQL driver takes so that the
// password stays out of MEDGATE_CP_STORE.
func controlPlaneVariables() map[string]bool {
	known := map[string]bool{"SPIFFE_ENDPOINT_SOCKET": true, "PGPASSWORD": true}
	for _, f := range envFields(reflect.TypeOf(controlPlaneEnv{})) {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		known[envPrefix+name] = true
	}
	return known
}

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
	// medgate's containers, by name: what each must expose and may read.
	type role struct {
		what  string
		args0 string
		ports []string
		known map[string]bool
		saw   bool
	}
	roles := map[string]*role{
		"medgate":       {what: "sidecar", args0: "sidecar", ports: []string{"8443/TCP", "8443/UDP", "9901/TCP"}, known: knownVariables()},
		"control-plane": {what: "control plane", args0: "control-plane", ports: []string{"7443/TCP", "9902/TCP"}, known: controlPlaneVariables()},
	}
	// The ports a NetworkPolicy may open to the pods of each app.
	reachable := map[string][]string{
		"pacs":                  {"8443", "9901"},
		"medgate-control-plane": {"7443", "9902"},
		"postgres":              {"5432"},
	}
	hardened := func(what string, sc any) {
		t.Helper()
		if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false || get(sc, "runAsNonRoot") != true ||
			get(sc, "capabilities", "drop", 0) != "ALL" {
			t.Errorf("%s security context: %v", what, sc)
		}
	}
	var sawPolicy, sawDatabase bool
	for _, d := range docs {
		name := toString(get(d, "metadata", "name"))
		switch d["kind"] {
		case "Deployment", "StatefulSet":
			pod := get(d, "spec", "template", "spec")
			if get(pod, "securityContext", "runAsNonRoot") != true {
				t.Errorf("%s: pod does not run as non-root", name)
			}
			containers, _ := get(pod, "containers").([]any)
			for _, c := range containers {
				env, _ := get(c, "env").([]any)
				if get(c, "name") == "postgres" {
					sawDatabase = true
					if img, _ := get(c, "image").(string); !strings.HasPrefix(img, "postgres:") || strings.HasSuffix(img, ":latest") {
						t.Errorf("database image %q: want a pinned postgres image", img)
					}
					hardened("database", get(c, "securityContext"))
					for _, e := range env {
						if toString(get(e, "name")) == "POSTGRES_PASSWORD" && get(e, "valueFrom", "secretKeyRef", "name") == nil {
							t.Error("the database password is not taken from a Secret")
						}
					}
					continue
				}
				r := roles[toString(get(c, "name"))]
				if r == nil {
					continue
				}
				r.saw = true
				if img, _ := get(c, "image").(string); !strings.Contains(img, "medgate:") || strings.HasSuffix(img, ":latest") {
					t.Errorf("%s image %q: want a pinned medgate image", r.what, img)
				}
				if got := toString(get(c, "args", 0)); got != r.args0 {
					t.Errorf("%s runs %q, want %q", r.what, got, r.args0)
				}
				ports := map[string]bool{}
				for _, p := range get(c, "ports").([]any) {
					ports[strings.Join([]string{toString(get(p, "containerPort")), toString(get(p, "protocol"))}, "/")] = true
				}
				for _, want := range r.ports {
					if !ports[want] {
						t.Errorf("%s does not expose %s", r.what, want)
					}
				}
				if get(c, "livenessProbe", "httpGet", "path") != "/healthz" || get(c, "readinessProbe", "httpGet", "path") != "/readyz" ||
					get(c, "livenessProbe", "httpGet", "port") != "admin" || get(c, "readinessProbe", "httpGet", "port") != "admin" {
					t.Errorf("%s: probes must use /healthz and /readyz on the admin port", r.what)
				}
				hardened(r.what, get(c, "securityContext"))
				if get(c, "resources", "limits", "memory") == nil || get(c, "resources", "requests", "cpu") == nil {
					t.Errorf("%s has no memory limit or CPU request", r.what)
				}
				for _, e := range env {
					n := toString(get(e, "name"))
					if !r.known[n] {
						t.Errorf("%s sets %s, which medgate does not read", r.what, n)
					}
					if n == "MEDGATE_CP_STORE" {
						u, err := url.Parse(toString(get(e, "value")))
						if err != nil || u.Scheme != "postgres" {
							t.Errorf("MEDGATE_CP_STORE: want a postgres:// URL (%v)", err)
						} else if _, set := u.User.Password(); set {
							t.Error("MEDGATE_CP_STORE holds the database password: take it from a Secret in PGPASSWORD")
						}
					}
					if n == "PGPASSWORD" && get(e, "valueFrom", "secretKeyRef", "name") == nil {
						t.Error("PGPASSWORD is not taken from a Secret")
					}
				}
			}
		case "NetworkPolicy":
			sawPolicy = true
			app := toString(get(d, "spec", "podSelector", "matchLabels", "app"))
			open, ok := reachable[app]
			if !ok {
				t.Errorf("NetworkPolicy %s selects app %q, which no test knows", name, app)
			}
			ingress, _ := get(d, "spec", "ingress").([]any)
			for _, rule := range ingress {
				ports, _ := get(rule, "ports").([]any)
				if len(ports) == 0 {
					t.Errorf("NetworkPolicy %s opens every port of %s", name, app)
				}
				for _, p := range ports {
					if port := toString(get(p, "port")); !slices.Contains(open, port) {
						t.Errorf("NetworkPolicy %s opens port %s of %s: only %v may be reachable", name, port, app, open)
					}
				}
				if app == "postgres" && get(rule, "from", 0, "podSelector", "matchLabels", "app") != "medgate-control-plane" {
					t.Errorf("NetworkPolicy %s lets more than the control plane reach the database", name)
				}
			}
		}
	}
	for _, r := range roles {
		if !r.saw {
			t.Errorf("manifests lack the %s", r.what)
		}
	}
	if !sawPolicy || !sawDatabase {
		t.Errorf("manifests lack the NetworkPolicies (%v) or the database (%v)", sawPolicy, sawDatabase)
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

// unitSettings reads a systemd unit's Key=Value lines.
func unitSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	unit, err := os.ReadFile(path)
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
	return set
}

// checkControlPlaneEnv reports what the control plane would refuse in
// its environment before it opens any file.
func checkControlPlaneEnv(vars map[string]string) error {
	e, err := env.ParseAsWithOptions[controlPlaneEnv](env.Options{Environment: vars, Prefix: envPrefix})
	errs, _ := parseErrors(err, controlPlaneEnv{})
	for name, v := range map[string]string{"CP_ADMINS": e.Admins, "CP_SIDECARS": e.Sidecars} {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s%s: required", envPrefix, name))
		} else if _, err := identity.ParsePatterns(v); err != nil {
			errs = append(errs, fmt.Errorf("%s%s: %v", envPrefix, name, err))
		}
	}
	if _, _, err := net.SplitHostPort(e.Listen); err != nil {
		errs = append(errs, fmt.Errorf("%sCP_LISTEN: %v", envPrefix, err))
	}
	return errors.Join(errs...)
}

func TestSystemdUnits(t *testing.T) {
	sidecar := unitSettings(t, "../../examples/systemd/medgate-sidecar.service")
	tests := []struct {
		unit, envFile, exec string
		known               map[string]bool
		check               func(map[string]string) error
	}{
		{"medgate-sidecar.service", "sidecar.env", "sidecar", knownVariables(), func(vars map[string]string) error {
			_, err := loadSidecarConfig(vars)
			return err
		}},
		{"medgate-control-plane.service", "control-plane.env", "control-plane", controlPlaneVariables(), checkControlPlaneEnv},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			set := unitSettings(t, filepath.Join("../../examples/systemd", tt.unit))
			for k, want := range map[string]string{
				"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
				"AmbientCapabilities": "", "User": "medgate", "ExecStart": "/usr/local/bin/medgate " + tt.exec, "KillSignal": "SIGTERM",
				"EnvironmentFile": "/etc/medgate/" + tt.envFile,
			} {
				if got, ok := set[k]; !ok || got != want {
					t.Errorf("%s=%q, want %q", k, got, want)
				}
			}
			// Every unit is hardened as the sidecar's is.
			for k, want := range sidecar {
				switch k {
				case "Description", "After", "EnvironmentFile", "ExecStart", "ExecReload", "TimeoutStopSec":
					continue
				}
				if got, ok := set[k]; !ok || got != want {
					t.Errorf("%s=%q, want %q as in medgate-sidecar.service", k, got, want)
				}
			}
			data, err := os.ReadFile(filepath.Join("../../examples/systemd", tt.envFile))
			if err != nil {
				t.Fatal(err)
			}
			vars := map[string]string{}
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				k, v, _ := strings.Cut(line, "=")
				if !tt.known[k] {
					t.Errorf("%s sets %s, which medgate does not read", tt.envFile, k)
				}
				vars[k] = v
			}
			// The file is a valid configuration, apart from files that
			// exist only on the deployed host.
			if err := tt.check(vars); err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					if strings.Contains(line, "MEDGATE_") && !strings.Contains(line, "no such file") {
						t.Errorf("%s: %s", tt.envFile, strings.TrimSpace(line))
					}
				}
			}
		})
	}
}
