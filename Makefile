# hwameid — top-level build.
#
#   make                 build hwameid, hwameictl (build/)
#   make ASAN=1 UBSAN=1  the same with sanitizers (build-asan/)
#   make check           install what is missing (make deps), then every test suite
#   make deps            install the Debian packages the build and the tests need
#   make install         install into $(DESTDIR)$(prefix)
#
# WARN_ONLY=1 turns -Werror off; V=1 shows the commands.

VERSION := $(shell cat VERSION)

prefix ?= /usr
sbindir ?= $(prefix)/sbin
bindir ?= $(prefix)/bin
sysconfdir ?= /etc
unitdir ?= /lib/systemd/system
mandir ?= $(prefix)/share/man

CC ?= cc
ifeq ($(V),1)
Q :=
else
Q := @
endif
PYTHON := /usr/bin/python3
PKG_CONFIG ?= pkg-config
PKGS := libsystemd libcjson libcurl yaml-0.1 blkid libnl-route-3.0 libxxhash openssl

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

.PHONY: format
format:
	clang-format -i $(shell git ls-files '*.c' '*.h')

.PHONY: check-format
check-format:
	clang-format --dry-run --Werror $(shell git ls-files '*.c' '*.h')

.PHONY: install
install: all
	install -Dm0755 $(BUILDDIR)/hwameid $(DESTDIR)$(sbindir)/hwameid
	install -Dm0755 $(BUILDDIR)/hwameictl $(DESTDIR)$(bindir)/hwameictl
	install -Dm0755 $(BUILDDIR)/hwamei-nbd $(DESTDIR)$(bindir)/hwamei-nbd
	install -Dm0644 units/hwameid.service $(DESTDIR)$(unitdir)/hwameid.service
	install -Dm0644 conf/hwameid.conf $(DESTDIR)$(sysconfdir)/hwameid/hwameid.conf
	install -Dm0644 packaging/man/hwameid.8 $(DESTDIR)$(mandir)/man8/hwameid.8
	install -Dm0644 packaging/man/hwameictl.8 $(DESTDIR)$(mandir)/man8/hwameictl.8
	install -Dm0644 packaging/man/hwameid.conf.5 $(DESTDIR)$(mandir)/man5/hwameid.conf.5

.PHONY: clean
clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILDDIR) -name '*.d' 2>/dev/null)
