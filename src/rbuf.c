/* Bounded byte buffers for response bodies, headers and command output
 * (include/recoveryd/op.h). */
#include "recoveryd/op.h"

#include <stdlib.h>
#include <string.h>

int rbuf_append(struct rbuf *b, const char *p, size_t n)
{
	if (b->max && b->len + n > b->max) {
		b->truncated = 1;
		n = b->max > b->len ? b->max - b->len : 0;
		if (n == 0)
			return -1;
	}
	if (b->len + n + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 1024;
		while (ncap < b->len + n + 1)
			ncap *= 2;
		char *np = realloc(b->p, ncap);
		if (!np)
			return -1;
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return b->truncated ? -1 : 0;
}

void rbuf_free(struct rbuf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}
