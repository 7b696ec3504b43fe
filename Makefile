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

CC ?= cc
ifeq ($(V),1)
Q :=
else
Q := @
endif
PYTHON := /usr/bin/python3
PKG_CONFIG ?= pkg-config
PKGS := libsystemd libcjson

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
LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)

# The daemon's modules, in layer order; main.c is the only file outside the library.
DAEMON_SRCS := \
	daemon/basic/ratelimit.c \
	daemon/basic/string-util.c \
	daemon/basic/time-util.c \
	daemon/log/log.c \
	daemon/config/conf-parser.c \
	daemon/config/hwameid-conf.c \
	daemon/control/control.c \
	daemon/control/control-client.c \
	daemon/notify.c \
	daemon/manager.c

DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(BUILDDIR)/%.o)
LIBHWAMEID := $(BUILDDIR)/libhwameid.a

UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILDDIR)/tests/%,$(wildcard tests/unit/test-*.c))

PROGRAMS := $(BUILDDIR)/hwameid $(BUILDDIR)/hwameictl

.SECONDARY:

.PHONY: all
all: $(PROGRAMS)

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

$(BUILDDIR)/tests/%: $(BUILDDIR)/tests/unit/%.o $(LIBHWAMEID)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) -lcmocka -lpthread

.PHONY: deps
deps:
	tools/install-deps

.PHONY: check
check: deps
	$(MAKE) all unit-tests
	$(MAKE) ASAN=1 UBSAN=1 unit-tests
	$(MAKE) check-unit
	$(MAKE) ASAN=1 UBSAN=1 check-unit
	$(MAKE) check-integration
	$(MAKE) check-standin

.PHONY: unit-tests
unit-tests: $(UNIT_TESTS)

# Runs every unit test binary; a failing one fails the target after all have run.
.PHONY: check-unit
check-unit: $(UNIT_TESTS)
	@tools/run-unit-tests $(UNIT_TESTS)

.PHONY: check-integration
check-integration: all
	HWAMEID_BUILDDIR=$(abspath $(BUILDDIR)) $(PYTHON) -m pytest -q $(PYTEST_ARGS) tests/integration

# The stand-in Kubernetes API server, proven against the real kubectl and python3-kubernetes.
.PHONY: check-standin
check-standin:
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests/standin

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
	install -Dm0644 units/hwameid.service $(DESTDIR)$(unitdir)/hwameid.service
	install -Dm0644 conf/hwameid.conf $(DESTDIR)$(sysconfdir)/hwameid/hwameid.conf

.PHONY: clean
clean:
	rm -rf build build-asan

-include $(DAEMON_OBJS:.o=.d) $(BUILDDIR)/daemon/main.d $(BUILDDIR)/tools/hwameictl/hwameictl.d
