/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/*
 * A small INI parser driven by a key table, after systemd's conf-parser:
 *
 *   [Section]
 *   Key=Value      # or ; starts a comment line
 *
 * A file is read, then every "<file>.d/<name>.conf" drop-in in lexical order; later assignments win,
 * list-valued keys append and an empty assignment resets them. Every problem is logged as
 * "FILE:LINE: …" naming the key; parsing goes on to report all of them and then fails.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "../basic/macro.h"

typedef int (*ConfigParseFn)(const char *file, unsigned line, const char *section, const char *key,
                             const char *value, void *field);
typedef int (*ConfigDumpFn)(FILE *f, const void *field);

typedef struct ConfigItem {
        const char *section;
        const char *key;
        ConfigParseFn parse;
        ConfigDumpFn dump;
        size_t offset; /* of the field inside the target struct */
} ConfigItem;

/* Parses one stream (name is used in messages). Returns 0, or -EINVAL after logging every error. */
int config_parse_stream(const char *name, FILE *f, const ConfigItem *items, size_t n_items, void *target);

/* Parses path and its drop-ins. A missing or unreadable main file is an error (logged). */
int config_parse_with_dropins(const char *path, const ConfigItem *items, size_t n_items, void *target);

/* Writes every item as INI, grouped by section in table order. */
int config_dump(FILE *f, const ConfigItem *items, size_t n_items, const void *target);

/* Logs "file:line: message" at error level and returns -abs(error) (or -EINVAL when 0). */
int config_log_syntax(const char *file, unsigned line, int error, const char *format, ...) _printf_(4, 5);

/* Value parsers and their dumpers, for the key table. */
int config_parse_string(const char *file, unsigned line, const char *section, const char *key,
                        const char *value, void *field);
int config_parse_path(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *field);
int config_parse_bool(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *field);
int config_parse_sec(const char *file, unsigned line, const char *section, const char *key,
                     const char *value, void *field);
int config_parse_unsigned(const char *file, unsigned line, const char *section, const char *key,
                          const char *value, void *field);
int config_parse_log_level(const char *file, unsigned line, const char *section, const char *key,
                           const char *value, void *field);
int config_parse_strv(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *field);
/* yes/no/auto into an int: 1, 0, -1. */
int config_parse_tristate(const char *file, unsigned line, const char *section, const char *key,
                          const char *value, void *field);
/* "10G", "512M", bytes into a uint64_t. */
int config_parse_size(const char *file, unsigned line, const char *section, const char *key,
                      const char *value, void *field);

int config_dump_string(FILE *f, const void *field);
int config_dump_bool(FILE *f, const void *field);
int config_dump_sec(FILE *f, const void *field);
int config_dump_unsigned(FILE *f, const void *field);
int config_dump_log_level(FILE *f, const void *field);
int config_dump_strv(FILE *f, const void *field);
int config_dump_tristate(FILE *f, const void *field);
int config_dump_size(FILE *f, const void *field);
