/* recoveryd's string.find/match/gmatch/gsub (src/pattern.c) in a sandboxed
 * state, every call on every input (layout: pattern_input.h). Each call gets
 * a step budget through the virtual clock (support.h): an input that
 * makes the matcher backtrack for long ends with the sandbox's "deadline
 * exceeded" error, which is the expected outcome, not a finding. Checks:
 * ASan/UBSan, a deadline error only with timed_out set (and the reverse),
 * and the same results when one of the calls (picked by the init byte) is
 * repeated. */
#include <stdint.h>

#include "pattern_input.h"
#include "support.h"
#include "recoveryd/sandbox.h"

#define BUDGET 0.003 /* virtual seconds = 3 clock reads = ~12k matcher steps */

static struct sandbox sb = {.mem_max = 256u << 20};
static lua_State *L;
static struct pat_out out1, out2;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pat_input in;

	if (pat_decode(data, size, &in) < 0)
		return 0;
	if (!L) {
		L = sandbox_new(&sb);
		FUZZ_ASSERT(L, "sandbox_new");
	}
	for (int op = 0; op < PAT_NOPS; op++) {
		sb.timed_out = 0;
		sb.deadline = fuzz_now() + BUDGET;
		int st = pat_run(L, &in, (enum pat_op)op, &out1);
		int timed_out = sb.timed_out;
		FUZZ_ASSERT(!timed_out || st != LUA_OK, "%s: timed out but returned results",
		            pat_op_name[op]);
		if (timed_out || op != (in.init & 7))
			continue;
		/* only an error counts: a result may well contain the text */
		FUZZ_ASSERT(st == LUA_OK || !strstr(out1.buf, "deadline exceeded"),
		            "deadline error without timed_out: %s", out1.buf);
		sb.deadline = fuzz_now() + BUDGET;
		pat_run(L, &in, (enum pat_op)op, &out2);
		FUZZ_ASSERT(sb.timed_out || !strcmp(out1.buf, out2.buf), "not deterministic:\n  %s\n  %s",
		            out1.buf, out2.buf);
	}
	sb.timed_out = 0;
	sb.deadline = 0;
	lua_gc(L, LUA_GCSTEP, 0);
	return 0;
}
