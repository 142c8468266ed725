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

.PHONY: all filters cli test lint bench demo clean FORCE

all: filters cli

filters: $(WASMS)

# go build is incremental; FORCE lets it decide what is stale.
$(BUILD)/filters/%.wasm: FORCE
	@mkdir -p $(dir $@)
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -o $@ ./filters/$*

cli:
	@mkdir -p $(BUILD)
	$(GO) build -o $(BUILD)/meshguard ./cmd/meshguard

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './build/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./filters/...

test: filters cli lint
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
