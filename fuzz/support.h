/* Shared pieces of the libFuzzer targets (docs/fuzzing.md).
 *
 * The targets are linked with -Wl,--wrap=rd_mono: the core library's clock
 * is a virtual one that advances by fuzz_tick on every read. The sandbox
 * reads it once per 1000 Lua instructions (count hook) and the pattern
 * matcher once per 4096 steps, so every deadline becomes an instruction /
 * step budget: a slow input is a bounded, reproducible run instead of a
 * libFuzzer timeout, and the verdict does not depend on the machine's load. */
#ifndef RECOVERYD_FUZZ_SUPPORT_H
#define RECOVERYD_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Seconds the virtual clock advances per read (default 0.001). */
extern double fuzz_tick;

/* The virtual clock's current value, without advancing it. */
double fuzz_now(void);

/* A NUL-terminated copy of data (aborts when out of memory). */
char *fuzz_strndup(const uint8_t *data, size_t size);

/* An invariant that does not hold: print and abort, so libFuzzer keeps the
 * input as a crash. */
#define FUZZ_ASSERT(cond, ...)                                                    \
	do {                                                                      \
		if (!(cond)) {                                                    \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
			        __LINE__, #cond);                                 \
			fprintf(stderr, "  " __VA_ARGS__);                        \
			fputc('\n', stderr);                                      \
			abort();                                                  \
		}                                                                 \
	} while (0)

#endif
