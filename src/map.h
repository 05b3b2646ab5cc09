/* A small string-keyed hash map (chained). Keys are copied; values are
 * borrowed pointers. Not thread-safe: callers hold their own lock. */
#ifndef RECOVERYD_MAP_H
#define RECOVERYD_MAP_H

#include <stddef.h>

struct map;

struct map *map_new(void);
/* free_val (may be NULL) is called on every value still present. */
void map_free(struct map *m, void (*free_val)(void *));
void *map_get(const struct map *m, const char *key);
/* Insert or replace; returns the previous value (or NULL). -1 cast on OOM
 * is avoided: returns NULL and sets *oom when allocation fails. */
void *map_put(struct map *m, const char *key, void *val, int *oom);
void *map_del(struct map *m, const char *key);
size_t map_len(const struct map *m);
/* Call fn for each entry; fn returns 1 to delete the entry (after which its
 * value is no longer referenced by the map). */
void map_each(struct map *m, int (*fn)(const char *key, void *val, void *arg), void *arg);

#endif
