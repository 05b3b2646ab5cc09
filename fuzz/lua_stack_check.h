/* Lua C API stack contract checker (see lua_stack_check.c); the functions
 * it wraps are listed in LUA_STACK_CHECK_WRAPS of fuzz/CMakeLists.txt. */
#ifndef RECOVERYD_LUA_STACK_CHECK_H
#define RECOVERYD_LUA_STACK_CHECK_H

/* Forget every lua_checkstack record: call before each call into Lua. */
void fuzz_stack_reset(void);

#endif
