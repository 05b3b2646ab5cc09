/* The PostgreSQL backend of the journal: placeholder until its
 * implementation lands; --state postgres://... is refused with a clear
 * error. */
#include "store_impl.h"

#include <stdio.h>

static int pg_open(struct store *s, char *err, size_t errlen)
{
	snprintf(err, errlen, "journal %s: the PostgreSQL backend is not built yet", s->path);
	return -1;
}

static void pg_close(struct store *s)
{
	(void)s;
}

const struct store_backend store_pg_backend = {
	.name = "postgres",
	.open = pg_open,
	.close = pg_close,
};
