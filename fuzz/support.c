#include "support.h"

#include <string.h>

double fuzz_tick = 0.001;
static double now = 1000.0; /* never 0: a 0 deadline means "none" */

double __wrap_rd_mono(void); /* replaces rd_mono (-Wl,--wrap=rd_mono) */

double __wrap_rd_mono(void)
{
	now += fuzz_tick;
	return now;
}

double fuzz_now(void)
{
	return now;
}

char *fuzz_strndup(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}
