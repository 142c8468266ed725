# meshguard build. `make demo` and `make test` are the two commands a newcomer needs.
GO        ?= go
BUILD     ?= build
GOTESTFLAGS ?= -timeout 45m
BENCHFLAGS  ?= -run '^$$' -bench . -benchmem -benchtime 1s

# Every folder under filters/ with a main.go is a filter module.
FILTERS := $(patsubst filters/%/main.go,%,$(wildcard filters/*/main.go))
WASMS   := $(FILTERS:%=$(BUILD)/filters/%.wasm)
# Nested Go modules (kept apart so heavy deps such as istio.io/istio or OPA never
# enter the main module); `make test` and `make bench` run them too.
SUBMODULES := $(patsubst %/go.mod,%,$(shell find . -mindepth 2 -name go.mod -not -path './build/*' | sort))

# Container image (make image): reproducible, no Docker daemon.
VERSION           ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION          ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
IMAGE_ARCH        ?= $(shell $(GO) env GOARCH)
# The build date is the commit's time, so a rebuild of one commit is the same binary.
BUILD_DATE        ?= $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r $(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ)
# What `meshguard version` and the distributor's meshguard_build_info report.
BUILDINFO         := github.com/meshguard/meshguard/internal/buildinfo
VERSION_LDFLAGS    = -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(REVISION) -X $(BUILDINFO).date=$(BUILD_DATE)

.PHONY: all filters cli image test lint bench demo browser clean FORCE

all: filters cli

filters: $(WASMS)

# go build is incremental; FORCE lets it decide what is stale.
$(BUILD)/filters/%.wasm: FORCE
	@mkdir -p $(dir $@)
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -ldflags='-s -w' -o $@ ./filters/$*

cli:
	@mkdir -p $(BUILD)
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o $(BUILD)/meshguard ./cmd/meshguard

# The static meshguard binary in an OCI image layout under $(BUILD)/image/oci
# (non-root, no shell); push it with crane: crane push build/image/oci REGISTRY/meshguard:TAG
image:
	@mkdir -p $(BUILD)/image
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath \
	  -ldflags "-s -w -buildid= $(VERSION_LDFLAGS)" -o $(BUILD)/image/meshguard ./cmd/meshguard
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./distributor/deploy/image/mkimage \
	  --binary $(BUILD)/image/meshguard --out $(BUILD)/image/oci --arch $(IMAGE_ARCH) \
	  --version $(VERSION) --revision $(REVISION)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './build/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./filters/...

# Headless Chromium from Debian for the console's browser test
# (distributor/console/browsertest), installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (apt-get) for the console's browser test"; \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

test: filters cli lint browser
	$(GO) test $(GOTESTFLAGS) ./...
	@set -e; for m in $(SUBMODULES); do echo "== module $$m"; (cd $$m && $(GO) vet ./... && $(GO) test $(GOTESTFLAGS) ./...); done

bench: filters cli
	$(GO) test $(BENCHFLAGS) ./...
	$(GO) test -run '^$$' -bench MemoryAfterRequests -benchtime 1000000x ./host
	# Guard linear memory after 1M requests (10M: -benchtime 10000000x, ~5 min).
	$(GO) test -run '^$$' -bench 'Memory$$' -benchtime 1000000x ./filters/guard
	$(GO) test -run '^$$' -bench 'Reload' -benchtime 20x ./filters/guard
	@set -e; for m in $(SUBMODULES); do echo "== module $$m"; (cd $$m && $(GO) test $(BENCHFLAGS) ./...); done

demo: filters cli
	$(GO) run ./examples/grid/cmd/demo

clean:
	rm -rf $(BUILD)

FORCE:
