/* The web console's files (ui.h): look-up and caching policy. */
#include "recoveryd/ui.h"

#include <string.h>

#define UI_PAGE "index.html"

/* Nothing but the console's own files: no inline script or style, no
 * framing (clickjacking of the action buttons), and the token-bearing
 * requests go to this origin only. */
const struct ui_header ui_headers[] = {
	{ "Content-Security-Policy",
	  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
	  "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
	  "frame-ancestors 'none'" },
	{ "X-Content-Type-Options", "nosniff" },
	{ "Referrer-Policy", "no-referrer" },
	{ "X-Frame-Options", "DENY" },
	{ NULL, NULL },
};

static const struct ui_asset *find_exact(const char *name)
{
	for (size_t i = 0; i < ui_assets_count; i++)
		if (strcmp(ui_assets[i].name, name) == 0)
			return &ui_assets[i];
	return NULL;
}

const struct ui_asset *ui_find(const char *path)
{
	const struct ui_asset *a = find_exact(path);

	/* cmake/embed.cmake refuses to build without index.html */
	return a ? a : find_exact(UI_PAGE);
}

const char *ui_cache_control(const struct ui_asset *a)
{
	/* A new build must reach the browser at once: the page is always
	 * revalidated, and it names the other files by version. */
	if (strcmp(a->name, UI_PAGE) == 0)
		return "no-cache";
	return "public, max-age=31536000, immutable";
}
