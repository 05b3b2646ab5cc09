/* Unit tests for src/auth.c: SHA-256 against known digests, the tokens
 * file (good lines, and each error with its file and line), finding the
 * principal of a token, the role table and playbook scopes. Digests of
 * the test tokens were computed with sha256sum, not with rd_sha256. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "recoveryd/auth.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* printf %s TOKEN | sha256sum */
#define AM_SHA "238a06b59a239819f276afacf3db248cfde3b88c17e3999d7ec2b67b59c3cd86"
#define VIEWER_SHA "d036bd6d01a1cae081d39a2f8dab751dc042de814fd60df31fcb553170950f29"
#define OPERATOR_SHA "0850123315d21ab90f4f7236408a52ef6dbd6a02a6550e5c10dc73f4d993680e"
#define ADMIN_SHA "10a4c7c9fc5206d6f36dc6944a81bb6f4a3cb0e25014ae3b12e6c3e52712292a"

static void hex(const unsigned char d[32], char out[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* ---- SHA-256 ---- */

static void check_sha(const void *data, size_t len, const char *want, const char *what)
{
	unsigned char d[32];
	char got[65];

	rd_sha256(data, len, d);
	hex(d, got);
	if (strcmp(got, want) != 0)
		fail_msg("sha256(%s): got %s, want %s", what, got, want);
}

static void test_sha256_vectors(void **state)
{
	(void)state;
	/* FIPS 180-4 examples */
	check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty");
	check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "abc");
	check_sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
	          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "448 bits");
	check_sha("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
	          "klmnopqrlmnopqrsmnopqrstnopqrstu",
	          112, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1", "896 bits");
	/* Only len bytes count, not what follows them. */
	check_sha("abcXYZ", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
	          "abc of abcXYZ");
}

/* Runs of 'a' around the padding boundaries: a tail of 55 bytes still
 * takes the length in its block, 56 needs a second one; the same again
 * after a full block. Digests from head -c N | tr '\0' a | sha256sum. */
static void test_sha256_block_boundaries(void **state)
{
	static const struct {
		size_t n;
		const char *sha;
	} cases[] = {
		{ 1, "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb" },
		{ 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318" },
		{ 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a" },
		{ 57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6" },
		{ 63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34" },
		{ 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb" },
		{ 65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0" },
		{ 119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb" },
		{ 120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c" },
		{ 127, "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a" },
		{ 128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e" },
		{ 129, "c12cb024a2e5551cca0e08fce8f1c5e314555cc3fef6329ee994a3db752166ae" },
		/* FIPS 180-4: one million 'a' */
		{ 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
	};
	char *buf = malloc(1000000), what[32];

	(void)state;
	assert_non_null(buf);
	memset(buf, 'a', 1000000);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		snprintf(what, sizeof(what), "%zu x 'a'", cases[i].n);
		check_sha(buf, cases[i].n, cases[i].sha, what);
	}
	free(buf);
}

/* ---- the tokens file ---- */

struct tfile {
	char path[256];
};

static void tfile_write(struct tfile *t, const char *text, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	int fd;

	snprintf(t->path, sizeof(t->path), "%s/rd-tokens-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	fd = mkstemp(t->path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static struct auth *load_ok(const char *text)
{
	struct auth *a = auth_new();
	struct tfile t;
	char err[512] = "";

	assert_non_null(a);
	tfile_write(&t, text, strlen(text));
	if (auth_load_file(a, t.path, err, sizeof(err)) != 0)
		fail_msg("auth_load_file: %s", err);
	unlink(t.path);
	return a;
}

static void find_ok(const struct auth *a, const char *tok, const char *name, enum role role,
                    const char *scope)
{
	struct actor who;

	memset(&who, 0, sizeof(who));
	if (auth_find(a, tok, strlen(tok), &who) != 0)
		fail_msg("token %s: no principal, want %s", tok, name);
	assert_string_equal(who.name, name);
	assert_int_equal(who.role, role);
	assert_string_equal(who.scope, scope);
}

static void find_none(const struct auth *a, const char *tok, size_t n)
{
	struct actor who;

	memset(&who, 0x5a, sizeof(who));
	if (auth_find(a, tok, n, &who) == 0)
		fail_msg("token '%.*s': found %s, want nobody", (int)n, tok, who.name);
	/* a miss leaves the caller's actor alone */
	for (size_t i = 0; i < sizeof(who); i++)
		assert_int_equal(((unsigned char *)&who)[i], 0x5a);
}

static void test_load_good(void **state)
{
	struct auth *a;

	(void)state;
	a = load_ok("# recoveryd principals\n"
	            "\n"
	            "alertmanager   alertmanager " AM_SHA "\n"
	            "   # indented comment\n"
	            "grafana\tviewer\t" VIEWER_SHA "   # trailing comment\n"
	            "oncall-ops operator " OPERATOR_SHA " settings-sync,cache.flush\r\n"
	            "\t \n"
	            /* upper-case hex is the same digest */
	            "root@ops admin 10A4C7C9FC5206D6F36DC6944A81BB6F4A3CB0E25014AE3B12E6C3E52712292A *\n"
	            "# the last line has no newline");
	assert_int_equal(auth_count(a), 4);
	find_ok(a, "am-token", "alertmanager", ROLE_ALERTMANAGER, "");
	find_ok(a, "viewer-token", "grafana", ROLE_VIEWER, "");
	/* kept as ",a,b," so that one lookup matches a whole name */
	find_ok(a, "operator-token", "oncall-ops", ROLE_OPERATOR, ",settings-sync,cache.flush,");
	/* "*" is every playbook, like no list at all */
	find_ok(a, "admin-token", "root@ops", ROLE_ADMIN, "");
	auth_free(a);

	/* the last line without a newline still counts; one playbook; empty
	 * entries of the list are skipped */
	a = load_ok("solo operator " OPERATOR_SHA " ,,only-this,");
	assert_int_equal(auth_count(a), 1);
	find_ok(a, "operator-token", "solo", ROLE_OPERATOR, ",only-this,");
	auth_free(a);
}

/* A comment ends its own line only: the principals after it are read
 * (and checked), not dropped. */
static void test_load_comment_then_principals(void **state)
{
	struct auth *a;

	(void)state;
	a = load_ok("grafana viewer " VIEWER_SHA "\n"
	            "# the on-call team\n"
	            "ops operator " OPERATOR_SHA " # pager rotation\n"
	            "root admin " ADMIN_SHA "\n");
	assert_int_equal(auth_count(a), 3);
	find_ok(a, "viewer-token", "grafana", ROLE_VIEWER, "");
	find_ok(a, "operator-token", "ops", ROLE_OPERATOR, "");
	find_ok(a, "admin-token", "root", ROLE_ADMIN, "");
	auth_free(a);
}

/* A name of 64 characters and a playbook list of 512 (",a,...,z,") are
 * the most there is room for. */
static void test_load_limits(void **state)
{
	char text[1024], list[600], name[80];
	struct auth *a;

	(void)state;
	memset(name, 'n', 64);
	name[64] = '\0';
	/* 8 names of 62, then one of 6: 2 + 8 * 62 + 6 + 8 commas = 512 */
	list[0] = '\0';
	for (int i = 0; i < 8; i++) {
		char pb[64];
		memset(pb, 'a' + i, 62);
		pb[62] = '\0';
		strcat(list, pb);
		strcat(list, ",");
	}
	strcat(list, "zzzzzz");
	snprintf(text, sizeof(text), "%s operator %s %s\n", name, OPERATOR_SHA, list);
	a = load_ok(text);
	{
		struct actor who;
		assert_int_equal(auth_find(a, "operator-token", 14, &who), 0);
		assert_string_equal(who.name, name);
		assert_int_equal(strlen(who.scope), 512);
		assert_true(actor_may_playbook(&who, "zzzzzz"));
		assert_false(actor_may_playbook(&who, "zzzzz"));
	}
	auth_free(a);
}

struct bad_file {
	const char *what;
	const char *text;
	int line;            /* the line the error names; 0: none */
	const char *want;    /* a substring of the reason */
};

#define GOOD_LINE "alertmanager alertmanager " AM_SHA "\n"

static const struct bad_file bad_files[] = {
	{ "two fields", "# c\n" GOOD_LINE "alice admin\n", 3, "expected NAME ROLE SHA256" },
	{ "five fields", GOOD_LINE "\nalice admin " ADMIN_SHA " a,b extra\n", 3,
	  "expected NAME ROLE SHA256" },
	{ "bad name", GOOD_LINE "al/ice admin " ADMIN_SHA "\n", 2, "invalid name \"al/ice\"" },
	{ "name too long",
	  "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn admin " ADMIN_SHA "\n", 1,
	  "invalid name" },
	{ "listed twice", GOOD_LINE "# again\nalertmanager viewer " VIEWER_SHA "\n", 3,
	  "principal alertmanager is listed twice" },
	{ "unknown role", GOOD_LINE "alice root " ADMIN_SHA "\n", 2, "unknown role \"root\"" },
	/* anonymous is what no token is, not a role to give */
	{ "role anonymous", "alice anonymous " ADMIN_SHA "\n", 1, "unknown role \"anonymous\"" },
	{ "role in capitals", "alice Admin " ADMIN_SHA "\n", 1, "unknown role" },
	{ "digest too short", "alice admin " "0850123315d21ab90f4f7236408a52ef6dbd6a02a6550e5c10dc73f4d993680\n",
	  1, "64 hex digits" },
	{ "digest too long", "alice admin " ADMIN_SHA "0\n", 1, "64 hex digits" },
	{ "digest not hex", "\n\n\nalice admin "
	  "g850123315d21ab90f4f7236408a52ef6dbd6a02a6550e5c10dc73f4d993680e\n", 4, "64 hex digits" },
	{ "the token, not its digest", "alice admin admin-token\n", 1, "64 hex digits" },
	/* `echo -n "$UNSET" | sha256sum`: a principal nobody could log in as */
	{ "digest of an empty token", "alice admin "
	  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n", 1, "empty token" },
	{ "empty playbook list", GOOD_LINE "alice operator " OPERATOR_SHA " ,\n", 2,
	  "empty playbook list" },
	{ "bad playbook name", GOOD_LINE "alice operator " OPERATOR_SHA " ok,no/slash\n", 2,
	  "invalid playbook name \"no/slash\"" },
	{ "empty file", "", 0, "lists no principal" },
	{ "only comments", "# nobody yet\n\n   \n# still nobody\n", 0, "lists no principal" },
};

static void check_bad(const char *text, size_t len, int line, const char *want, const char *what)
{
	struct auth *a = auth_new();
	struct tfile t;
	char err[512] = "", prefix[400];

	assert_non_null(a);
	tfile_write(&t, text, len);
	if (auth_load_file(a, t.path, err, sizeof(err)) == 0)
		fail_msg("%s: loaded, want an error", what);
	if (line)
		snprintf(prefix, sizeof(prefix), "tokens file %s: line %d: ", t.path, line);
	else
		snprintf(prefix, sizeof(prefix), "tokens file %s", t.path);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("%s: error '%s' does not start with '%s'", what, err, prefix);
	if (!strstr(err, want))
		fail_msg("%s: error '%s' does not contain '%s'", what, err, want);
	unlink(t.path);
	auth_free(a);
}

static const char nul_file[] = GOOD_LINE "alice admin " ADMIN_SHA "\0 junk\n";

static void test_load_errors(void **state)
{
	char text[1024], list[700];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad_files); i++)
		check_bad(bad_files[i].text, strlen(bad_files[i].text), bad_files[i].line,
		          bad_files[i].want, bad_files[i].what);

	/* one character more than test_load_limits: 513 */
	list[0] = '\0';
	for (int i = 0; i < 8; i++) {
		char pb[64];
		memset(pb, 'a' + i, 62);
		pb[62] = '\0';
		strcat(list, pb);
		strcat(list, ",");
	}
	strcat(list, "zzzzzzz");
	snprintf(text, sizeof(text), GOOD_LINE "long operator %s %s\n", OPERATOR_SHA, list);
	check_bad(text, strlen(text), 2, "longer than 512", "scope too long");

	/* a NUL byte would hide the rest of its line */
	check_bad(nul_file, sizeof(nul_file) - 1, 0, "a NUL byte", "NUL byte");
}

static void test_load_missing_file(void **state)
{
	struct auth *a = auth_new();
	char err[512] = "";

	(void)state;
	assert_int_equal(auth_load_file(a, "/nonexistent/recoveryd-tokens", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "tokens file /nonexistent/recoveryd-tokens: "));
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(auth_count(a), 0);
	auth_free(a);
}

/* ---- finding the principal of a token ---- */

static void test_find(void **state)
{
	struct auth *a;
	struct actor who;

	(void)state;
	a = load_ok(GOOD_LINE "grafana viewer " VIEWER_SHA "\n"
	                      "ops operator " OPERATOR_SHA " pb1\n"
	                      "root admin " ADMIN_SHA "\n");
	find_ok(a, "am-token", "alertmanager", ROLE_ALERTMANAGER, "");
	find_ok(a, "viewer-token", "grafana", ROLE_VIEWER, "");
	find_ok(a, "operator-token", "ops", ROLE_OPERATOR, ",pb1,");
	find_ok(a, "admin-token", "root", ROLE_ADMIN, "");

	find_none(a, "wrong-token", 11);
	find_none(a, "", 0);
	/* a prefix, an extension or another case of a token is another token */
	find_none(a, "admin-toke", 10);
	find_none(a, "admin-token ", 12);
	find_none(a, "Admin-token", 11);
	/* the token is tok[0..n), not the C string */
	assert_int_equal(auth_find(a, "admin-token-and-more", 11, &who), 0);
	assert_string_equal(who.name, "root");
	find_none(a, "admin-token\0", 12);

	/* the address is the caller's: it is not from the table */
	snprintf(who.address, sizeof(who.address), "192.0.2.7");
	assert_int_equal(auth_find(a, "viewer-token", 12, &who), 0);
	assert_string_equal(who.name, "grafana");
	assert_string_equal(who.address, "192.0.2.7");
	auth_free(a);

	assert_int_equal(auth_find(NULL, "admin-token", 11, &who), -1);
	a = auth_new();
	find_none(a, "admin-token", 11);
	assert_int_equal(auth_count(a), 0);
	assert_int_equal(auth_count(NULL), 0);
	auth_free(a);
	auth_free(NULL);
}

/* Every principal is compared: the first, one in the middle and the last
 * of many are found, each as itself. */
static void test_find_among_many(void **state)
{
	struct auth *a = auth_new();
	char name[32], tok[32];

	(void)state;
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "user%03d", i);
		snprintf(tok, sizeof(tok), "secret-%03d", i);
		assert_int_equal(auth_add_token(a, name, i % 2 ? ROLE_VIEWER : ROLE_OPERATOR, tok), 0);
	}
	assert_int_equal(auth_count(a), 300);
	find_ok(a, "secret-000", "user000", ROLE_OPERATOR, "");
	find_ok(a, "secret-151", "user151", ROLE_VIEWER, "");
	find_ok(a, "secret-299", "user299", ROLE_VIEWER, "");
	find_none(a, "secret-300", 10);
	find_none(a, "secret-29", 9);
	auth_free(a);
}

/* The legacy token files add "alertmanager" and "operator" next to the
 * tokens file: a name the file already uses is refused, not shadowed. */
static void test_add_token(void **state)
{
	struct auth *a = load_ok("alertmanager viewer " VIEWER_SHA "\n");

	(void)state;
	assert_int_equal(auth_add_token(a, "alertmanager", ROLE_ALERTMANAGER, "am-token"), -1);
	assert_int_equal(auth_count(a), 1);
	/* the file's principal is unchanged and the refused token is nobody */
	find_ok(a, "viewer-token", "alertmanager", ROLE_VIEWER, "");
	find_none(a, "am-token", 8);

	assert_int_equal(auth_add_token(a, "operator", ROLE_OPERATOR, "legacy-token"), 0);
	assert_int_equal(auth_count(a), 2);
	find_ok(a, "legacy-token", "operator", ROLE_OPERATOR, "");
	assert_int_equal(auth_add_token(a, "operator", ROLE_OPERATOR, "other-token"), -1);
	assert_int_equal(auth_add_token(a, "", ROLE_OPERATOR, "x"), -1);
	assert_int_equal(auth_add_token(a, "no space", ROLE_OPERATOR, "x"), -1);
	assert_int_equal(auth_count(a), 2);
	auth_free(a);
}

/* ---- roles ---- */

static void test_role_admits(void **state)
{
	/* want[have][need] */
	static const int want[ROLE__COUNT][ROLE__COUNT] = {
		/*                   none am viewer operator admin */
		[ROLE_NONE] =         { 1, 0, 0, 0, 0 },
		/* alertmanager posts notifications and reads nothing */
		[ROLE_ALERTMANAGER] = { 1, 1, 0, 0, 0 },
		[ROLE_VIEWER] =       { 1, 0, 1, 0, 0 },
		/* operators and admins may post webhooks too */
		[ROLE_OPERATOR] =     { 1, 1, 1, 1, 0 },
		[ROLE_ADMIN] =        { 1, 1, 1, 1, 1 },
	};

	(void)state;
	for (int have = 0; have < ROLE__COUNT; have++)
		for (int need = 0; need < ROLE__COUNT; need++)
			if (auth_role_admits((enum role)have, (enum role)need) != want[have][need])
				fail_msg("%s needing %s: got %d, want %d", role_name((enum role)have),
				         role_name((enum role)need), !want[have][need], want[have][need]);
}

static void test_role_names(void **state)
{
	static const char *const names[ROLE__COUNT] = {
		"anonymous", "alertmanager", "viewer", "operator", "admin",
	};
	enum role r;

	(void)state;
	for (int i = 0; i < ROLE__COUNT; i++)
		assert_string_equal(role_name((enum role)i), names[i]);
	for (int i = ROLE_ALERTMANAGER; i < ROLE__COUNT; i++) {
		r = ROLE_NONE;
		assert_int_equal(role_parse(names[i], &r), 0);
		assert_int_equal(r, i);
	}
	r = ROLE_VIEWER;
	/* no token is not a role a file can give */
	assert_int_equal(role_parse("anonymous", &r), -1);
	assert_int_equal(role_parse("Admin", &r), -1);
	assert_int_equal(role_parse("", &r), -1);
	assert_int_equal(role_parse("admin ", &r), -1);
	assert_int_equal(r, ROLE_VIEWER);
	assert_string_equal(role_name(ROLE__COUNT), "unknown");
	assert_string_equal(role_name((enum role)-1), "unknown");
}

/* ---- scopes ---- */

static void test_scope(void **state)
{
	struct actor all, some;

	(void)state;
	actor_init(&all, "root", ROLE_ADMIN, "10.0.0.1");
	assert_string_equal(all.name, "root");
	assert_int_equal(all.role, ROLE_ADMIN);
	assert_string_equal(all.scope, "");
	assert_string_equal(all.address, "10.0.0.1");
	assert_true(actor_may_playbook(&all, "anything"));
	assert_true(actor_may_playbook(&all, "x"));

	actor_init(&some, "ops", ROLE_OPERATOR, NULL);
	assert_string_equal(some.address, "");
	snprintf(some.scope, sizeof(some.scope), ",settings-sync,db,cache.flush,");
	assert_true(actor_may_playbook(&some, "settings-sync"));
	assert_true(actor_may_playbook(&some, "db"));
	assert_true(actor_may_playbook(&some, "cache.flush"));
	/* whole names only: no prefix, suffix or part of one */
	assert_false(actor_may_playbook(&some, "settings"));
	assert_false(actor_may_playbook(&some, "sync"));
	assert_false(actor_may_playbook(&some, "d"));
	assert_false(actor_may_playbook(&some, "db2"));
	assert_false(actor_may_playbook(&some, "cache"));
	assert_false(actor_may_playbook(&some, "other"));
	assert_false(actor_may_playbook(&some, ""));
	assert_false(actor_may_playbook(&some, NULL));
	/* "*" (pause everything) is not a playbook of a scoped principal */
	assert_false(actor_may_playbook(&some, "*"));

	/* actor_init clears what was there and cuts an over-long name */
	{
		char longname[100];
		memset(longname, 'x', 99);
		longname[99] = '\0';
		actor_init(&some, longname, ROLE_VIEWER, "192.0.2.1");
		assert_int_equal(strlen(some.name), ACTOR_NAME_MAX);
		assert_string_equal(some.scope, "");
		assert_true(actor_may_playbook(&some, "db"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_sha256_block_boundaries),
		cmocka_unit_test(test_load_good),
		cmocka_unit_test(test_load_comment_then_principals),
		cmocka_unit_test(test_load_limits),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_load_missing_file),
		cmocka_unit_test(test_find),
		cmocka_unit_test(test_find_among_many),
		cmocka_unit_test(test_add_token),
		cmocka_unit_test(test_role_admits),
		cmocka_unit_test(test_role_names),
		cmocka_unit_test(test_scope),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
