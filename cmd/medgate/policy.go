package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/medgate/medgate/posture"
)

// policyWatcher keeps the local policy file's compiled policy in an
// engine: it reloads the file when it changes or on SIGHUP. A file that
// does not load is refused with its errors logged, and the last good
// policy stays in force.
type policyWatcher struct {
	path     string
	engine   *posture.Engine
	interval time.Duration
	log      *slog.Logger
	stamp    string
	// changed runs after a new policy is in force.
	changed func()
}

// newPolicyWatcher loads path once; a sidecar with a policy file that does
// not load does not start.
func newPolicyWatcher(path string, interval time.Duration, log *slog.Logger) (*policyWatcher, error) {
	engine, err := posture.NewEngine(posture.Config{}, posture.Deps{})
	if err != nil {
		return nil, err
	}
	w := &policyWatcher{path: path, engine: engine, interval: interval, log: log}
	if err := w.reload(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *policyWatcher) fileStamp() string {
	fi, err := os.Stat(w.path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano())
}

func (w *policyWatcher) reload() error {
	stamp := w.fileStamp()
	p, err := posture.LoadFiles(w.path)
	if err != nil {
		return err
	}
	if err := checkPolicyProfiles(p); err != nil {
		return err
	}
	w.stamp = stamp
	old := w.engine.Policy()
	if old != nil && old.Version == p.Version {
		return nil
	}
	w.engine.SetPolicy(p)
	w.log.Info("policy in force", "policy_version", p.Version, "file", w.path)
	if old != nil && w.changed != nil {
		w.changed()
	}
	return nil
}

// Run follows the file until ctx ends.
func (w *policyWatcher) Run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		case <-t.C:
			if w.fileStamp() == w.stamp {
				continue
			}
		}
		if err := w.reload(); err != nil {
			w.log.Error("policy file refused; the last good policy stays in force", "file", w.path, "err", err)
		}
	}
}

// ready reports whether a policy is in force.
func (w *policyWatcher) ready() error {
	if w.engine.Policy() == nil {
		return errors.New("no policy loaded")
	}
	return nil
}
