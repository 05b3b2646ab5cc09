/* The web console (ui/, docs/console.md): its files, embedded in the
 * binary at build time by cmake/embed.cmake, and how they are served. The
 * files hold no data and need no token; the page's script reads the API
 * with the bearer token the user signs in with. */
#ifndef RECOVERYD_UI_H
#define RECOVERYD_UI_H

#include <stddef.h>

struct ui_asset {
	const char *name;           /* file name under ui/, e.g. "app.js" */
	const unsigned char *data;  /* len bytes (plus a NUL) */
	size_t len;
	const char *ctype;          /* Content-Type */
};

struct ui_header {
	const char *name, *value;
};

/* Defined by the generated file (the build tree's ui_assets.c). */
extern const struct ui_asset ui_assets[];
extern const size_t ui_assets_count;
extern const char ui_version[]; /* hash of the files, in the page's asset URLs */

/* What /ui/<path> serves: the file called path, or for any other path the
 * page (index.html), whose script routes deep links such as jobs/<id>.
 * Never NULL. */
const struct ui_asset *ui_find(const char *path);

/* Cache-Control of a: the page is revalidated on every load; the files it
 * names carry ui_version in their URL and may be kept. */
const char *ui_cache_control(const struct ui_asset *a);

/* Headers every console answer carries (Content-Security-Policy and the
 * like); ends with { NULL, NULL }. */
extern const struct ui_header ui_headers[];

#endif
