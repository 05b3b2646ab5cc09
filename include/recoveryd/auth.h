/* Named principals and their roles (docs/security.md "Identities and
 * roles"). A tokens file lists each principal with the SHA-256 of its
 * token, never the token: a leaked file or journal gives nobody a login.
 * The two legacy token files are shorthand for one alertmanager and one
 * operator principal. */
#ifndef RECOVERYD_AUTH_H
#define RECOVERYD_AUTH_H

#include <stddef.h>

/* Ordered: each role may do what the ones before it may, except that
 * alertmanager may only post notifications (auth_role_admits). */
enum role {
	ROLE_NONE,          /* anonymous: no valid token */
	ROLE_ALERTMANAGER,  /* POST /webhook only */
	ROLE_VIEWER,        /* read-only API */
	ROLE_OPERATOR,      /* trigger, cancel, pause, resume, approve, reject */
	ROLE_ADMIN,         /* also force past budget and cooldown */
	ROLE__COUNT
};

#define ACTOR_NAME_MAX 64
#define ACTOR_SCOPE_MAX 512
#define ACTOR_ADDR_MAX 46
#define AUTH_REASON_MAX 512

/* Who asks for something, as the engine records it. */
struct actor {
	char name[ACTOR_NAME_MAX + 1];
	enum role role;
	/* Playbooks the principal may act on: "" = every one, else
	 * ",name,name," (so a lookup is one strstr of ",name,"). */
	char scope[ACTOR_SCOPE_MAX + 1];
	char address[ACTOR_ADDR_MAX + 1]; /* client address ("" for a signal) */
};

struct auth;

struct auth *auth_new(void);
void auth_free(struct auth *a);
/* Read a tokens file into a fresh table: one principal per line,
 *   NAME ROLE SHA256-HEX [PLAYBOOK,PLAYBOOK,...]
 * '#' starts a comment. 0, or -1 with err naming the file and line. */
int auth_load_file(struct auth *a, const char *path, char *err, size_t errlen);
/* Add a principal with this token (the legacy token files). 0 or -1. */
int auth_add_token(struct auth *a, const char *name, enum role role, const char *token);
size_t auth_count(const struct auth *a);
/* The principal whose token is tok[0..n): 0 with *out filled (address
 * untouched), -1 when none. Every principal is compared, in constant time
 * over the token's digest, whatever matches. */
int auth_find(const struct auth *a, const char *tok, size_t n, struct actor *out);

/* The playbook list of principal name into out (len >= ACTOR_SCOPE_MAX + 1,
 * "" = every playbook): 0, or -1 when there is no such principal (out is
 * then a list that names no playbook). */
int auth_scope(const struct auth *a, const char *name, char *out, size_t len);
/* May this role use what needs `need`? */
int auth_role_admits(enum role have, enum role need);
/* May the actor act on this playbook (its scope)? */
int actor_may_playbook(const struct actor *a, const char *playbook);
/* Fill an actor for a principal that is not from a token (a signal, the
 * --insecure-no-auth caller). */
void actor_init(struct actor *a, const char *name, enum role role, const char *address);
const char *role_name(enum role r);
int role_parse(const char *s, enum role *out);

/* SHA-256 (FIPS 180-4). */
void rd_sha256(const void *data, size_t len, unsigned char out[32]);

#endif
