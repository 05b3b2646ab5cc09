/* Differential: the same calls (layout: pattern_input.h) through recoveryd's
 * matcher (src/pattern.c, in a sandboxed state) and through stock Lua 5.4's
 * string library (a plain luaL_newstate), which is the reference: results,
 * and error messages, must be identical. A call that runs out of its step
 * budget in recoveryd's state is not compared (stock Lua has no budget, and
 * the same backtracking there would be a libFuzzer timeout). */
#include <lualib.h>
#include <stdint.h>

#include "pattern_input.h"
#include "support.h"
#include "recoveryd/sandbox.h"

#define BUDGET 0.003 /* ~12k matcher steps (fuzz_pattern.c) */

static struct sandbox sb = {.mem_max = 256u << 20};
static lua_State *L_rd, *L_stock;
static struct pat_out out_rd, out_stock, shown;

static const char *render(const struct pat_input *in)
{
	char init[32];
	shown.len = 0;
	out_str(&shown, "pattern \"");
	out_bytes(&shown, in->p, in->lp);
	out_str(&shown, "\" subject \"");
	out_bytes(&shown, in->s, in->ls);
	out_str(&shown, "\" replacement \"");
	out_bytes(&shown, in->r, in->lr);
	snprintf(init, sizeof(init), "\" init %d", in->init);
	out_str(&shown, init);
	return shown.buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pat_input in;

	if (pat_decode(data, size, &in) < 0)
		return 0;
	if (!L_rd) {
		L_rd = sandbox_new(&sb);
		L_stock = luaL_newstate();
		FUZZ_ASSERT(L_rd && L_stock, "new states");
		luaL_openlibs(L_stock);
	}
	for (int op = 0; op < PAT_NOPS; op++) {
		sb.timed_out = 0;
		sb.deadline = fuzz_now() + BUDGET;
		pat_run(L_rd, &in, (enum pat_op)op, &out_rd);
		if (sb.timed_out)
			continue;
		pat_run(L_stock, &in, (enum pat_op)op, &out_stock);
		FUZZ_ASSERT(!strcmp(out_rd.buf, out_stock.buf),
		            "recoveryd and stock Lua differ\n  input:     %s\n  recoveryd: %s\n  stock:     %s",
		            render(&in), out_rd.buf, out_stock.buf);
	}
	sb.timed_out = 0;
	sb.deadline = 0;
	lua_gc(L_rd, LUA_GCSTEP, 0);
	lua_gc(L_stock, LUA_GCSTEP, 0);
	return 0;
}
