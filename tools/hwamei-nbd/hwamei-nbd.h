/* SPDX-License-Identifier: Apache-2.0 */
#pragma once

/* The verbs of hwamei-nbd; each returns the process exit status. */
int verb_serve(int argc, char *argv[]);
int verb_copy(int argc, char *argv[]);
