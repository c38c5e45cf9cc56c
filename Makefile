# hotpatch: the two commands of the README are `make demo` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/hotpatch/hotpatch/internal/version.Version=$(VERSION)

.PHONY: build test demo fuzz bench docs clean corpus

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

# Everything CI checks: formatting, vet, all tests (they compile the C
# fixtures with gcc), and a build for another OS so the stubs keep compiling.
test:
	./scripts/test.sh

demo: build
	./demo/run.sh

# Fuzz the untrusted-input parsers for FUZZTIME each (default 60s).
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./patch -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./patch -run '^$$' -fuzz '^FuzzDecodePayload$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./unwind -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./internal/procevents -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./internal/kmsg -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s
	$(GO) test ./server/pki -run '^$$' -fuzz '^FuzzIssue$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s

bench:
	$(GO) run ./bench/buildsize
	$(GO) run ./bench/restart
	$(GO) run ./bench/calloverhead
	$(GO) run ./bench/agent
	$(GO) test -run '^$$' -bench . -benchtime 200x ./engine
	$(GO) test -run '^$$' -bench Dashboard -benchtime 20x ./server

# The builder measured on real security fixes of Debian source packages
# (corpus/): builds them (cached in ~/.cache/hotpatch/corpus), patches live
# services under load, writes docs/CORPUS.md. Needs root and deb-src lines.
corpus:
	$(GO) run ./corpus/run

# Regenerate docs/cli.md from the command tree (a test checks it is current).
docs:
	$(GO) run ./cli/gendoc > docs/cli.md
	$(GO) run ./cli/gendoc -openapi > docs/openapi.json

clean:
	rm -rf bin
