/* Deadline-aware replacements for string.find, match, gmatch and gsub. */
#ifndef RECOVERYD_PATTERN_H
#define RECOVERYD_PATTERN_H

#include <lua.h>

/* Replace the pattern functions of the state's `string` table. */
void pattern_install(lua_State *L);

#endif
