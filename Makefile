# hwameid — top-level build.
#
#   make                 build hwameid, hwameictl (build/)
#   make ASAN=1 UBSAN=1  the same with sanitizers (build-asan/)
#   make check           install what is missing (make deps), then every test suite
#   make deps            install the Debian packages the build and the tests need
#   make install         install into $(DESTDIR)$(prefix)
#   make deb, make rpm   build the packages (build/packages/), each from a copy of the tree
#   make check-packages  build both packages and check their contents
#   make check-vm        the VM acceptance suite: the .deb in three qemu guests (tests/vm)
#
# WARN_ONLY=1 turns -Werror off; V=1 shows the commands.

VERSION := $(shell cat VERSION)

prefix ?= /usr
sbindir ?= $(prefix)/sbin
bindir ?= $(prefix)/bin
sysconfdir ?= /etc
unitdir ?= /lib/systemd/system
mandir ?= $(prefix)/share/man
datadir ?= $(prefix)/share
localstatedir ?= /var
tmpfilesdir ?= $(prefix)/lib/tmpfiles.d
catalogdir ?= $(prefix)/lib/systemd/catalog
modulesloaddir ?= $(prefix)/lib/modules-load.d
bashcompletiondir ?= $(datadir)/bash-completion/completions
docdir ?= $(datadir)/doc/hwameid

CC ?= cc
ifeq ($(V),1)
Q :=
else
Q := @
endif
PYTHON := /usr/bin/python3
PKG_CONFIG ?= pkg-config
PKGS := libsystemd libcjson libcurl yaml-0.1 blkid libnl-route-3.0 libxxhash openssl libmicrohttpd

ifeq ($(ASAN)$(UBSAN),)
BUILDDIR ?= build
OPTFLAGS ?= -O2 -D_FORTIFY_SOURCE=3
else
BUILDDIR ?= build-asan
OPTFLAGS ?= -O1 -fno-omit-frame-pointer
endif

WARNFLAGS := -Wall -Wextra -Wformat=2 -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
	-Wno-unused-parameter -Wno-missing-field-initializers -Wvla -Wdate-time \
	-Werror=implicit-function-declaration -Werror=format-security
ifneq ($(WARN_ONLY),1)
WARNFLAGS += -Werror
endif

HARDENFLAGS := -fstack-protector-strong -fstack-clash-protection -fcf-protection -fPIE
SANFLAGS :=
ifeq ($(ASAN),1)
SANFLAGS += -fsanitize=address
endif
ifeq ($(UBSAN),1)
SANFLAGS += -fsanitize=undefined -fno-sanitize-recover=undefined
endif

CFLAGS ?= -g
ALL_CFLAGS := -std=gnu11 $(OPTFLAGS) $(CFLAGS) $(WARNFLAGS) $(HARDENFLAGS) $(SANFLAGS) \
	-DHWAMEID_VERSION='"$(VERSION)"' -D_GNU_SOURCE -Idaemon \
	$(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null) -MMD -MP
ALL_LDFLAGS := -pie -Wl,-z,relro,-z,now -Wl,--as-needed $(SANFLAGS) $(LDFLAGS)
ifeq ($(ASAN)$(UBSAN),)
ALL_LDFLAGS += -Wl,-z,defs
endif
# liblvm2cmd has no pkg-config file.
LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -llvm2cmd

# Every module of the daemon goes into one static library; main.c is the only file outside it,
# so that unit tests and fuzzers link exactly the code that ships.
DAEMON_SRCS := $(sort $(wildcard daemon/*/*.c)) daemon/notify.c daemon/manager.c

DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(BUILDDIR)/%.o)
LIBHWAMEID := $(BUILDDIR)/libhwameid.a

UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILDDIR)/tests/%,$(wildcard tests/unit/test-*.c))

# Fuzzers: tests/fuzz/fuzz-NAME.c defines LLVMFuzzerTestOneInput(); its corpus is
# tests/fuzz/corpus/NAME/. "make check" replays every corpus through a plain build of each
# fuzzer (with fuzz-main.c); "make fuzz" builds real libFuzzer binaries with clang.
FUZZERS := $(patsubst tests/fuzz/fuzz-%.c,%,$(filter-out tests/fuzz/fuzz-main.c,$(wildcard tests/fuzz/fuzz-*.c)))
FUZZ_REPLAYS := $(FUZZERS:%=$(BUILDDIR)/fuzz/replay-%)

PROGRAMS := $(BUILDDIR)/hwameid $(BUILDDIR)/hwameictl $(BUILDDIR)/hwamei-nbd
HWAMEI_NBD_OBJS := $(patsubst %.c,$(BUILDDIR)/%.o,$(wildcard tools/hwamei-nbd/*.c))

# Test drivers: small programs that let the integration tests exercise one layer of the daemon.
TEST_HELPERS := $(patsubst tests/helpers/%.c,$(BUILDDIR)/tests/helpers/%,$(wildcard tests/helpers/*.c))

.SECONDARY:

.PHONY: all
all: $(PROGRAMS) $(TEST_HELPERS)

$(BUILDDIR)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(LIBHWAMEID): $(DAEMON_OBJS)
	@rm -f $@
	@$(if $(Q),echo "  AR      $@")
	$(Q)$(AR) rcs $@ $^

$(BUILDDIR)/hwameid: $(BUILDDIR)/daemon/main.o $(LIBHWAMEID)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILDDIR)/hwameictl: $(BUILDDIR)/tools/hwameictl/hwameictl.o $(LIBHWAMEID)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILDDIR)/hwamei-nbd: $(HWAMEI_NBD_OBJS) $(LIBHWAMEID)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILDDIR)/tests/helpers/%: $(BUILDDIR)/tests/helpers/%.o $(LIBHWAMEID)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILDDIR)/tests/%: $(BUILDDIR)/tests/unit/%.o $(LIBHWAMEID)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) -lcmocka -lpthread

$(BUILDDIR)/fuzz/replay-%: $(BUILDDIR)/tests/fuzz/fuzz-%.o $(BUILDDIR)/tests/fuzz/fuzz-main.o $(LIBHWAMEID)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

.PHONY: deps
deps:
	tools/install-deps

.PHONY: check
check: deps
	$(MAKE) all unit-tests
	$(MAKE) ASAN=1 UBSAN=1 unit-tests
	$(MAKE) check-unit check-fuzz-replay
	$(MAKE) ASAN=1 UBSAN=1 check-unit check-fuzz-replay
	$(MAKE) check-integration
	$(MAKE) check-standin

.PHONY: unit-tests
unit-tests: $(UNIT_TESTS) $(FUZZ_REPLAYS)

# Runs every unit test binary; a failing one fails the target after all have run.
.PHONY: check-unit
check-unit: $(UNIT_TESTS)
	@tools/run-unit-tests $(UNIT_TESTS)

# Replays each fuzzer's corpus (in the sanitizer build this catches memory errors too).
.PHONY: check-fuzz-replay
check-fuzz-replay: $(FUZZ_REPLAYS)
	@set -e; for f in $(FUZZERS); do $(BUILDDIR)/fuzz/replay-$$f tests/fuzz/corpus/$$f; done

# libFuzzer builds (clang); run one with e.g. "build-fuzz/fuzz-conf-parser -max_total_time=60
# tests/fuzz/corpus/conf-parser". FUZZ_SECONDS bounds "make fuzz-run".
FUZZ_SECONDS ?= 60
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-DHWAMEID_VERSION='"$(VERSION)"' -D_GNU_SOURCE -Idaemon $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
.PHONY: fuzz fuzz-run
fuzz: $(FUZZERS:%=build-fuzz/fuzz-%)
build-fuzz/fuzz-%: tests/fuzz/fuzz-%.c $(DAEMON_SRCS)
	@mkdir -p build-fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(DAEMON_SRCS) $(LIBS)
fuzz-run: fuzz
	@set -e; for f in $(FUZZERS); do mkdir -p build-fuzz/corpus-$$f; \
		build-fuzz/fuzz-$$f -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus-$$f tests/fuzz/corpus/$$f; done

.PHONY: check-integration
check-integration: all
	HWAMEID_BUILDDIR=$(abspath $(BUILDDIR)) $(PYTHON) -m pytest -q $(PYTEST_ARGS) tests/integration

# The stand-in Kubernetes API server, proven against the real kubectl and python3-kubernetes.
.PHONY: check-standin
check-standin:
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests/standin

# The Kubernetes layer's benchmark: prints "bench: NAME VALUE UNIT" lines and a table with the
# targets; asserts nothing about time. BENCH_ARGS="--idle-seconds 60 --objects 2000" is quicker.
.PHONY: bench-kube
bench-kube: all
	HWAMEID_BUILDDIR=$(abspath $(BUILDDIR)) $(PYTHON) tests/bench/bench_kube.py $(BENCH_ARGS)

# The block stream against nbdcopy and nbdkit (plain and TLS-PSK): MB/s, CPU s/GiB, peak RSS and
# the ratios, as "bench:" lines. BENCH_ARGS="--size-mib 512" is quicker.
# Volume eviction on a three-node cluster on this machine, live (tools/demo).
.PHONY: demo
demo: all deps
	HWAMEID_BUILDDIR=$(abspath $(BUILDDIR)) $(PYTHON) tools/demo

.PHONY: bench-stream
bench-stream: all deps
	HWAMEID_BUILDDIR=$(abspath $(BUILDDIR)) $(PYTHON) tests/bench/bench_stream.py $(BENCH_ARGS)

# Volume eviction: a three-node harness cluster drains a node holding 20 volumes of 256 MiB; the
# time to the last migration, split into control plane and copy, and the copy's MB/s against the
# block stream alone, as "bench:" lines. BENCH_ARGS="--volumes 4 --size-mib 64" is quicker.
.PHONY: bench-evict
bench-evict: all deps
	HWAMEID_BUILDDIR=$(abspath $(BUILDDIR)) $(PYTHON) tests/bench/bench_evict.py $(BENCH_ARGS)

.PHONY: format
format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

.PHONY: check-format
check-format:
	clang-format --dry-run --Werror $(shell git ls-files '*.c' '*.h')

.PHONY: programs
programs: $(PROGRAMS)

# The installed layout; the Debian and RPM packaging call this and list nothing of their own.
.PHONY: install
install: $(PROGRAMS)
	install -Dm0755 $(BUILDDIR)/hwameid $(DESTDIR)$(sbindir)/hwameid
	install -Dm0755 $(BUILDDIR)/hwameictl $(DESTDIR)$(bindir)/hwameictl
	install -Dm0755 $(BUILDDIR)/hwamei-nbd $(DESTDIR)$(bindir)/hwamei-nbd
	install -Dm0644 units/hwameid.service $(DESTDIR)$(unitdir)/hwameid.service
	install -Dm0644 units/hwameid.tmpfiles $(DESTDIR)$(tmpfilesdir)/hwameid.conf
	install -Dm0644 units/hwameid.catalog $(DESTDIR)$(catalogdir)/hwameid.catalog
	install -Dm0644 units/hwameid-modules.conf $(DESTDIR)$(modulesloaddir)/hwameid.conf
	install -Dm0644 conf/hwameid.conf $(DESTDIR)$(sysconfdir)/hwameid/hwameid.conf
	install -d -m0700 $(DESTDIR)$(localstatedir)/lib/hwameid
	install -d -m0755 $(DESTDIR)$(datadir)/hwameid/crds
	install -m0644 conf/crds/*.yaml $(DESTDIR)$(datadir)/hwameid/crds/
	install -Dm0644 tools/hwameictl/hwameictl.bash-completion $(DESTDIR)$(bashcompletiondir)/hwameictl
	install -Dm0644 packaging/man/hwameid.8 $(DESTDIR)$(mandir)/man8/hwameid.8
	install -Dm0644 packaging/man/hwameictl.8 $(DESTDIR)$(mandir)/man8/hwameictl.8
	install -Dm0644 packaging/man/hwameid.conf.5 $(DESTDIR)$(mandir)/man5/hwameid.conf.5
	install -Dm0644 packaging/man/hwamei-nbd.1 $(DESTDIR)$(mandir)/man1/hwamei-nbd.1
	install -Dm0644 packaging/doc/troubleshooting.md $(DESTDIR)$(docdir)/troubleshooting.md

# Packages. Each is built from a copy of the tree (tracked files and new, not ignored ones) in a
# temporary directory and lands in $(PKGDIR); VERSION is the only version: the Debian changelog
# and the RPM spec are generated from it here.
PKGDIR ?= build/packages
PKG_DATE := $(shell git log -1 --format=%cD 2>/dev/null || date -R)
PKG_RPMDATE := $(shell git log -1 --date='format:%a %b %d %Y' --format=%cd 2>/dev/null || date '+%a %b %d %Y')
PKG_FILES = git ls-files -z --cached --others --exclude-standard | xargs -0 sh -c 'for f; do [ -e "$$f" ] && printf "%s\0" "$$f"; done' sh

.PHONY: deb
deb:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	src=$$tmp/hwameid-$(VERSION); mkdir -p $$src $(PKGDIR); \
	$(PKG_FILES) | tar --null -T - -cf - | tar -xf - -C $$src; \
	cp -r packaging/deb/debian $$src/debian; \
	printf 'hwameid (%s) unstable; urgency=medium\n\n  * hwameid %s.\n\n -- %s  %s\n' \
		'$(VERSION)' '$(VERSION)' "$$(sed -n 's/^Maintainer: //p' packaging/deb/debian/control)" \
		'$(PKG_DATE)' >$$src/debian/changelog; \
	(cd $$src && dpkg-buildpackage -b -us -uc); \
	cp $$tmp/*.deb $(PKGDIR)/; \
	if command -v lintian >/dev/null; then lintian --fail-on error $$tmp/*.changes; fi; \
	ls $(PKGDIR)/hwameid_$(VERSION)_*.deb

# On Debian, rpmbuild cannot resolve BuildRequires (the build dependencies are Debian packages),
# so it runs with --nodeps, and packaging/rpm/macros.debian supplies what Debian's rpm lacks
# (the systemd macros).
ifneq ($(wildcard /etc/debian_version),)
RPMBUILD_FLAGS ?= --nodeps --load=packaging/rpm/macros.debian
endif
.PHONY: rpm
rpm:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir -p $$tmp/SOURCES $$tmp/SPECS $$tmp/src/hwameid-$(VERSION) $(PKGDIR); \
	$(PKG_FILES) | tar --null -T - -cf - | tar -xf - -C $$tmp/src/hwameid-$(VERSION); \
	tar -C $$tmp/src -czf $$tmp/SOURCES/hwameid-$(VERSION).tar.gz hwameid-$(VERSION); \
	sed -e 's/@VERSION@/$(VERSION)/g' -e 's/@DATE@/$(PKG_RPMDATE)/' \
		-e "s/@PACKAGER@/$$(sed -n 's/^Maintainer: //p' packaging/deb/debian/control)/" \
		packaging/rpm/hwameid.spec.in >$$tmp/SPECS/hwameid.spec; \
	rpmbuild -bb $(RPMBUILD_FLAGS) --define "_topdir $$tmp" $$tmp/SPECS/hwameid.spec; \
	find $$tmp/RPMS -name '*.rpm' -exec cp {} $(PKGDIR)/ \;; \
	if command -v rpmlint >/dev/null; then rpmlint $$tmp/SPECS/hwameid.spec $(PKGDIR)/hwameid-$(VERSION)-*.rpm || true; fi; \
	ls $(PKGDIR)/hwameid-$(VERSION)-*.rpm

# Builds both packages and checks their contents, installs the .deb into a scratch root.
.PHONY: check-packages
check-packages: $(PROGRAMS)
	HWAMEID_BUILDDIR=$(abspath $(BUILDDIR)) $(PYTHON) -m pytest -q $(PYTEST_ARGS) tests/integration/test_packaging.py

# The VM acceptance suite: three Debian guests under qemu (TCG) install the .deb and run hwameid
# under real systemd, against the stand-in API server (tests/vm/README.md). Installs the host's
# VM packages, builds the programs and the .deb (into $(BUILDDIR)/vm-packages), then runs the
# suite; the guest image is cached in /var/cache/hwameid-vm (HWAMEID_VM_CACHE).
VM_PKGDIR = $(BUILDDIR)/vm-packages
.PHONY: check-vm
check-vm:
	tools/install-deps --vm
	$(MAKE) programs
	rm -rf $(VM_PKGDIR)
	$(MAKE) PKGDIR=$(abspath $(VM_PKGDIR)) deb
	HWAMEID_VM_DEB=$$(ls $(abspath $(VM_PKGDIR))/hwameid_$(VERSION)_*.deb) \
		timeout 25m $(PYTHON) -m pytest -q $(PYTEST_ARGS) tests/vm

.PHONY: clean
clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILDDIR) -name '*.d' 2>/dev/null)
