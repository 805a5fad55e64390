# medgate: run 'make help' for the targets.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin/medgate
FUZZTIME  ?= 20s
PKGS      := ./...

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build the static binary into bin/medgate
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/medgate

.PHONY: build-hsm
build-hsm: ## build bin/medgate-hsm with PKCS#11 support (cgo, links the HSM's library at run time)
	CGO_ENABLED=1 $(GO) build -trimpath -tags pkcs11 -ldflags '$(LDFLAGS)' -o bin/medgate-hsm ./cmd/medgate

.PHONY: demo
demo: build ## run the main job on this machine: two sidecars, an app, a refused peer
	./$(BIN) demo

.PHONY: test
test: vet ## run the whole suite (unit, fuzz seeds, FIPS mode, HSM, end to end) with -race
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	GODEBUG=fips140=only $(GO) test -count=1 ./crypto/...
	@if [ -e /usr/lib/softhsm/libsofthsm2.so ]; then \
		CGO_ENABLED=1 $(GO) test -race -count=1 -tags pkcs11 ./crypto/keys/... && \
		CGO_ENABLED=1 $(GO) test -count=1 -tags pkcs11 -run PKCS11 ./cmd/medgate; \
	else echo "SKIP PKCS#11 tests: SoftHSM2 is not installed (apt-get install softhsm2)"; fi

.PHONY: generate
generate: ## regenerate controlplane/api from controlplane.proto (needs protoc: apt-get install protobuf-compiler)
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(CURDIR)/bin $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
	cd controlplane/api && PATH="$(CURDIR)/bin:$$PATH" protoc -I . \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative controlplane.proto

.PHONY: vet
vet: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 20s)
	@for pkg in $$($(GO) list $(PKGS)); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

.PHONY: bench
bench: build ## run the system benchmarks side by side; writes bench/results/
	$(GO) run ./bench -bin $(BIN) -out bench/results

.PHONY: bench-deps
bench-deps: ## install the TLS proxies the benchmarks compare against (stunnel, HAProxy, nginx)
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends stunnel4 haproxy nginx-light libnginx-mod-stream
	-systemctl stop haproxy nginx 2>/dev/null

.PHONY: bench-check
bench-check: ## exit non-zero when a ratio in bench/results/latest.json is below its target
	$(GO) run ./bench -check bench/results/latest.json

.PHONY: e2e-spire
e2e-spire: ## build SPIRE v1.13.3 (about 40 min) and run the end-to-end test against it
	.ci/build-spire .cache/spire
	PATH="$(CURDIR)/.cache/spire/bin:$$PATH" $(GO) test -count=1 -run TestE2ESPIRE -v ./cmd/medgate

.PHONY: docker
docker: ## build the container image medgate:$(VERSION) (needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) -t medgate:$(VERSION) .

.PHONY: clean
clean: ## remove build output
	rm -rf bin
