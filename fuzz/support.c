#include "support.h"

#include <string.h>

double fuzz_tick = 0.001;
double fuzz_realtime_scale = 0;
static double now = 1000.0; /* never 0: a 0 deadline means "none" */
static double real_last;

double __real_rd_mono(void);
double __wrap_rd_mono(void); /* replaces rd_mono (-Wl,--wrap=rd_mono) */

double __wrap_rd_mono(void)
{
	double step = fuzz_tick;
	if (fuzz_realtime_scale > 0) {
		double real = __real_rd_mono();
		if (real_last > 0 && (real - real_last) * fuzz_realtime_scale > step)
			step = (real - real_last) * fuzz_realtime_scale;
		real_last = real;
	}
	now += step;
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
