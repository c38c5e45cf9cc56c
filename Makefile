# hotpatch: the two commands of the README are `make demo` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/hotpatch/hotpatch/internal/version.Version=$(VERSION) $(LDFLAGS_EXTRA)

.PHONY: build test demo stock-demo corpus fuzz bench docs clean install uninstall package

BINARIES := hotpatch hotpatchd hotpatch-server
OUT      ?= bin

# One line per binary: a first build also downloads and compiles the
# dependencies, which takes about a minute on a small machine.
build:
	@test -e $(OUT)/hotpatch || echo "make build: a first build also downloads and compiles the dependencies (about a minute)"
	@for b in $(BINARIES); do echo "  go build  $(OUT)/$$b"; $(GO) build -ldflags "$(LDFLAGS)" -o $(OUT)/$$b ./cmd/$$b || exit 1; done

# Everything CI checks: formatting, vet, all tests (they compile the C
# fixtures with gcc), and a build for another OS so the stubs keep compiling.
test:
	./scripts/test.sh

# Patch binaries Debian ships (libexpat1, mosquitto) live from their own
# source packages and real fixes (docs/stock.md). Installs what it needs.
stock-demo:
	./scripts/stock-demo.sh

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
	$(GO) test -run '^$$' -bench Compare -benchtime 20x ./stock

# The builder measured on real security fixes of Debian source packages
# (corpus/): builds them (cached in ~/.cache/hotpatch/corpus), patches live
# services under load, writes docs/CORPUS.md. Needs root and deb-src lines.
corpus:
	$(GO) run ./corpus/run

# Regenerate docs/cli.md from the command tree (a test checks it is current).
docs:
	$(GO) run ./cli/gendoc > docs/cli.md
	$(GO) run ./cli/gendoc -openapi > docs/openapi.json

# make install [PREFIX=/usr/local] [DESTDIR=]: the binaries, the systemd
# units (their ExecStart pointed at BINDIR), the agent's config (kept if
# present), man pages and shell completions. It does not create the
# hotpatch user that hotpatch-server.service runs as; the packages do.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
MANDIR     ?= $(PREFIX)/share/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SHAREDIR   ?= $(PREFIX)/share
SYSCONFDIR ?= /etc
DESTDIR    ?=

install: build
	@echo "  gendoc    man pages and shell completions"
	@rm -rf dist/gen && $(GO) run ./cli/gendoc -install dist/gen
	@echo "  install   into $(DESTDIR)$(PREFIX) and $(DESTDIR)$(SYSCONFDIR)/hotpatch"
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SHAREDIR)/bash-completion/completions $(DESTDIR)$(SHAREDIR)/zsh/vendor-completions \
		$(DESTDIR)$(SHAREDIR)/fish/vendor_completions.d $(DESTDIR)$(SYSCONFDIR)/hotpatch/patches $(DESTDIR)$(SYSCONFDIR)/hotpatch/trusted
	install -m 0755 $(addprefix $(OUT)/,$(BINARIES)) $(DESTDIR)$(BINDIR)/
	for u in hotpatchd hotpatch-server; do \
		sed -e 's#^ExecStart=/usr/bin/#ExecStart=$(BINDIR)/#' -e 's#/etc/hotpatch#$(SYSCONFDIR)/hotpatch#g' packaging/$$u.service >$(DESTDIR)$(UNITDIR)/$$u.service && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.service || exit 1; done
	test -e $(DESTDIR)$(SYSCONFDIR)/hotpatch/hotpatchd.yaml || \
		sed 's#/etc/hotpatch#$(SYSCONFDIR)/hotpatch#g' packaging/hotpatchd.yaml >$(DESTDIR)$(SYSCONFDIR)/hotpatch/hotpatchd.yaml
	install -m 0644 dist/gen/man/man1/hotpatch.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 dist/gen/man/man8/hotpatchd.8 dist/gen/man/man8/hotpatch-server.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 dist/gen/completion/bash/* $(DESTDIR)$(SHAREDIR)/bash-completion/completions/
	install -m 0644 dist/gen/completion/zsh/* $(DESTDIR)$(SHAREDIR)/zsh/vendor-completions/
	install -m 0644 dist/gen/completion/fish/* $(DESTDIR)$(SHAREDIR)/fish/vendor_completions.d/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(BINARIES)) $(DESTDIR)$(UNITDIR)/hotpatchd.service $(DESTDIR)$(UNITDIR)/hotpatch-server.service \
		$(DESTDIR)$(MANDIR)/man1/hotpatch.1 $(DESTDIR)$(MANDIR)/man8/hotpatchd.8 $(DESTDIR)$(MANDIR)/man8/hotpatch-server.8 \
		$(addprefix $(DESTDIR)$(SHAREDIR)/bash-completion/completions/,$(BINARIES)) \
		$(addprefix $(DESTDIR)$(SHAREDIR)/zsh/vendor-completions/_,$(BINARIES)) \
		$(addsuffix .fish,$(addprefix $(DESTDIR)$(SHAREDIR)/fish/vendor_completions.d/,$(BINARIES)))
	@echo "make uninstall: $(SYSCONFDIR)/hotpatch and the state in /var/lib are left in place"

# make package: dist/hotpatch_VERSION_amd64.deb and dist/hotpatch-VERSION.x86_64.rpm,
# built with nfpm (a go.mod tool) from a staged "make install"; static
# binaries (CGO_ENABLED=0), so the packages depend on nothing, without
# their Go symbol tables (-s -w: a third of the size).
PKG_VERSION ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//;s/-/~/g' | grep . || echo 0.1.0~git$$(git rev-parse --short HEAD 2>/dev/null || echo dev))
package:
	rm -rf dist/root dist/*.deb dist/*.rpm
	CGO_ENABLED=0 $(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/dist/root PREFIX=/usr LDFLAGS_EXTRA="-s -w" OUT=dist/bin
	@echo "  nfpm      dist/ (deb, rpm), version $(PKG_VERSION)"
	PKG_VERSION=$(PKG_VERSION) $(GO) tool nfpm package -f packaging/nfpm.yaml -p deb -t dist/
	PKG_VERSION=$(PKG_VERSION) $(GO) tool nfpm package -f packaging/nfpm.yaml -p rpm -t dist/

clean:
	rm -rf bin dist
