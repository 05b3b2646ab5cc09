/* String-keyed hash map with separate chaining and doubling. */
#include "map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	char *key;
	void *val;
	struct entry *next;
};

struct map {
	struct entry **b;
	size_t nb, n;
};

static uint64_t hash(const char *s)
{
	uint64_t h = 14695981039346656037ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

struct map *map_new(void)
{
	struct map *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->nb = 64;
	m->b = calloc(m->nb, sizeof(*m->b));
	if (!m->b) {
		free(m);
		return NULL;
	}
	return m;
}

void map_free(struct map *m, void (*free_val)(void *))
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nb; i++)
		for (struct entry *e = m->b[i], *n; e; e = n) {
			n = e->next;
			if (free_val)
				free_val(e->val);
			free(e->key);
			free(e);
		}
	free(m->b);
	free(m);
}

void *map_get(const struct map *m, const char *key)
{
	for (struct entry *e = m->b[hash(key) % m->nb]; e; e = e->next)
		if (strcmp(e->key, key) == 0)
			return e->val;
	return NULL;
}

static void grow(struct map *m)
{
	size_t nb = m->nb * 2;
	struct entry **b = calloc(nb, sizeof(*b));
	if (!b)
		return; /* keep the longer chains; still correct */
	for (size_t i = 0; i < m->nb; i++)
		for (struct entry *e = m->b[i], *n; e; e = n) {
			n = e->next;
			size_t k = hash(e->key) % nb;
			e->next = b[k];
			b[k] = e;
		}
	free(m->b);
	m->b = b;
	m->nb = nb;
}

void *map_put(struct map *m, const char *key, void *val, int *oom)
{
	size_t k = hash(key) % m->nb;
	struct entry *e;

	if (oom)
		*oom = 0;
	for (e = m->b[k]; e; e = e->next)
		if (strcmp(e->key, key) == 0) {
			void *old = e->val;
			e->val = val;
			return old;
		}
	e = malloc(sizeof(*e));
	if (!e || !(e->key = strdup(key))) {
		free(e);
		if (oom)
			*oom = 1;
		return NULL;
	}
	e->val = val;
	e->next = m->b[k];
	m->b[k] = e;
	if (++m->n > m->nb)
		grow(m);
	return NULL;
}

void *map_del(struct map *m, const char *key)
{
	struct entry **pp = &m->b[hash(key) % m->nb];
	for (; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->key, key) == 0) {
			struct entry *e = *pp;
			void *v = e->val;
			*pp = e->next;
			free(e->key);
			free(e);
			m->n--;
			return v;
		}
	return NULL;
}

size_t map_len(const struct map *m)
{
	return m->n;
}

void map_each(struct map *m, int (*fn)(const char *key, void *val, void *arg), void *arg)
{
	for (size_t i = 0; i < m->nb; i++) {
		struct entry **pp = &m->b[i];
		while (*pp) {
			struct entry *e = *pp;
			if (fn(e->key, e->val, arg)) {
				*pp = e->next;
				free(e->key);
				free(e);
				m->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}
