/* Shared pieces of the libFuzzer targets (docs/fuzzing.md).
 *
 * The targets are linked with -Wl,--wrap=rd_mono: the core library's clock
 * is a virtual one that advances by fuzz_tick on every read. The sandbox
 * reads it once per 1000 Lua instructions (count hook) and the pattern
 * matcher once per 4096 steps, so every deadline becomes an instruction /
 * step budget: a slow input is a bounded, reproducible run instead of a
 * libFuzzer timeout, and the verdict does not depend on the machine's load.
 *
 * Lua code can also spend its time in C (string.rep, gsub, table.concat ...)
 * with few instructions; for targets that run arbitrary Lua, a read also
 * advances the clock by fuzz_realtime_scale times the real time passed
 * since the previous read, so the deadline still comes, sooner than in
 * production, without a libFuzzer timeout. */
#ifndef RECOVERYD_FUZZ_SUPPORT_H
#define RECOVERYD_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* Seconds the virtual clock advances per read (default 0.001). */
extern double fuzz_tick;
/* At least this many virtual seconds per real second (default 0: none). */
extern double fuzz_realtime_scale;

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
