local out = {}
-- strings as %q, so that a NUL or a newline in a result shows (no pattern function here)
local function show(...) local t = table.pack(...) local r = {} for i = 1, t.n do r[#r+1] = type(t[i]) == "string" and string.format("%q", t[i]) or tostring(t[i]) end out[#out+1] = table.concat(r, ",") end
local S = "hello world from Lua 5.4, key=value; a=1 b=22 c=333 (nested (parens)) end"
show(string.find(S, "world")) show(string.find(S, "o", 6)) show(string.find(S, "%d+")) show(string.find(S, "(%a+)=(%w+)"))
show(string.find(S, ".", 1, true)) show(string.find(S, "l+", -10)) show(string.find(S, "^hello")) show(string.find(S, "^world"))
show(string.match(S, "(%a+) (%a+)")) show(string.match(S, "()ll()")) show(string.match(S, "%b()")) show(string.match(S, "%f[%a]%a+", 10))
show(string.match(S, "(%d)%.(%d)")) show(string.match("key = val", "^(%w+)%s*=%s*(%w+)$")) show(string.match("aaa", "a-b")) show(string.match("aaab", "a-b"))
show(string.match("[x]", "%[(.-)%]")) show(string.match("abc", "[^a]+")) show(string.match("a-b", "[a%-]+")) show(string.match("x$y", "x$y"))
show(string.match("hello", ".-$")) show(string.match("abcabc", "(abc)%1")) show(string.match("", ".*")) show(string.match("abc", "b?c"))
show(string.match("  trim  ", "^%s*(.-)%s*$")) show(string.match("2026-11-29T12:00:00Z", "(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)"))
for k, v in string.gmatch(S, "(%a+)=(%w+)") do show(k, v) end
for w in string.gmatch("one two  three", "%a+") do show(w) end
for a in string.gmatch("abc", "") do show("e", a) end
show(string.gsub(S, "%d+", "#")) show(string.gsub("hello world", "(%w+)", "<%1>")) show(string.gsub("hello", "", "-"))
show(string.gsub("abc", "%w", "%0%0")) show(string.gsub("$name is $age", "%$(%w+)", {name="bob", age=42}))
show(string.gsub("x=1, y=2", "(%w+)=(%w+)", function(k, v) return v .. "=" .. k end)) show(string.gsub("abc", "b", "%%"))
show(string.gsub("hello world", "o", "0", 1)) show(string.gsub("abc", "^a", "A")) show(string.gsub("aaa", "a*", "-"))
show(pcall(string.gsub, "abc", "(", "x")) show(pcall(string.find, "abc", "%")) show(pcall(string.match, "abc", "[a"))
show(("test"):find("es")) show(("x y"):gsub(" ", "_"))
show(string.find("a+b", "+", 1, true)) show(string.find("abc", "", 10)) show(string.find("abc", "", 4)) show(string.gmatch("abc", "b")())
show(string.match("key: value", "(%w+):%s*(.*)")) show(string.gsub("one;two;;three", ";;", ";"))
show(string.find("THE (quick) fox", "%((%a+)%)")) show(string.match("f(a(b)c)d", "%b()"))
-- embedded NUL: a pattern without specials is a plain search even with a NUL in it
show(string.find("a)\0b", ")\0")) show(string.find("a\0b", "\0")) show(string.find("a\0b", "\0b", 1)) show(string.find("a\0\0", "\0", 3))
show(string.find("a.\0b", ".\0")) show(string.match("a\0b", "(.)\0(.)")) show(pcall(string.find, "a)\0b", ")\0%"))
show(string.gsub("a\0b\0", "\0", "0")) show(string.find("x]\0", "]\0")) show(string.find("a\0b", "%\0"))
-- %z (NUL) and %Z (not NUL): deprecated, still in Lua 5.4's lstrlib
show(string.find("a\0b", "%z")) show(string.find("az", "%z")) show(string.find("\0\0a", "%Z")) show(string.find("aZ", "%Z"))
show(string.match("x\0y", "[%z]")) show(string.match("\0\0ab\0", "[^%z]+")) show(string.gsub("a\0b\0", "%z", "0"))
show(string.find("ab", "%f[%z]")) show(string.find("a\0b", "%f[%Z]", 2)) show(string.match("\0\0x", "%z*()")) show(string.match("\0", "%Z"))
for w in string.gmatch("a\0bc\0\0d", "%Z+") do show(w) end
-- anchors, init, positions, frontier, balance, back references
show(string.find("abc", "b", -1)) show(string.find("abc", "b", -100)) show(string.find("abc", "", 5)) show(string.match("abc", "()", 4))
show(string.find("a^b", "^b", 2)) show(string.find("a^b", "a^")) show(string.match("a$b", "$b")) show(string.gsub("abc", "$", "!"))
show(string.gsub("THE (quick) fox", "%f[%a]%a+", "W")) show(string.match("((a)(b))", "%b()")) show(string.match("x(a", "%b()"))
show(string.find("abab", "(ab)%1")) show(string.match("aXbXc", "()X()")) show(string.gsub("abc", "()", "%1"))
-- gmatch: init (5.4), '^' is a plain character, empty matches after a match
for a, b in string.gmatch("abcd", "()(.)", 3) do show(a, b) end
for w in string.gmatch("^a^b", "^.") do show(w) end
for w in string.gmatch("abc", "%a*") do show("g", w) end
for w in string.gmatch("abc", ".", -1) do show("n", w) end
for w in string.gmatch("abc", "", 10) do show("x", w) end
-- gsub: empty matches, %0-%9 and %%, table and function replacements, counts
show(string.gsub("abc", "%w*", "-")) show(string.gsub("abc", "b*", "-")) show(string.gsub("", "", "x")) show(string.gsub("abc", "", "%%"))
show(string.gsub("hello world", "(o)", "%0%1")) show(string.gsub("abc", ".", {a = 1, b = true and "B"})) show(string.gsub("abc", "%w", {}))
show(string.gsub("abc", "(%w)", function(c) if c == "b" then return false end return c:upper() end)) show(string.gsub("abc", "%w", "x", 0))
show(string.gsub("abc", "%w", "x", -1)) show(string.gsub("abc", "()", {[1] = "one", [4] = "four"})) show(string.gsub(123, "2", 5))
show(pcall(string.gsub, "abc", "%w", "%2")) show(pcall(string.gsub, "abc", "(%w)", "%")) show(pcall(string.gsub, "abc", "(%w)", "%x"))
show(pcall(string.gsub, "abc", "%w", true)) show(pcall(string.gsub, "abc", "(b)", {b = {}})) show(pcall(string.gsub, "abc", "(b)", function() return {} end))
-- malformed patterns: the stock error messages
show(pcall(string.find, "abc", "%f")) show(pcall(string.find, "abc", "%fa")) show(pcall(string.find, "abc", "(()")) show(pcall(string.find, "abc", "%b"))
show(pcall(string.find, "abc", "%b(")) show(pcall(string.find, "abc", "%1")) show(pcall(string.find, "abc", "(a%1)")) show(pcall(string.find, "abc", "a)"))
show(pcall(string.find, "abc", "[a")) show(pcall(string.find, "abc", "[a%")) show(pcall(string.find, "abc", "[]")) show(pcall(string.find, "abc", "%"))
show(pcall(string.match, "abc", "(()")) show(pcall(string.match, "abc", "()%1"))
-- limits: 32 captures, 200 nested matches
show(select("#", string.match(("a"):rep(32), ("(a)"):rep(32)))) show(pcall(string.match, ("a"):rep(33), ("(a)"):rep(33)))
show(pcall(string.match, ("a"):rep(300), ("a?"):rep(250))) show(#string.match(("a"):rep(300), ("a?"):rep(190)))
show(#string.match(("a"):rep(300), ("a?"):rep(199))) show(pcall(string.match, ("a"):rep(300), ("a?"):rep(200)))
-- more corners: anchored gsub stops after one try, clipped init, '-' at the end of a set, '%' before the last ']', a true replacement
show(string.gsub("aaa", "^a", "b")) show(string.find("abc", "a", -100)) show(string.match("a-b", "[a-]+")) show(pcall(string.find, "a]", "[%]"))
show(pcall(string.gsub, "abc", "b", {b = true})) show(pcall(string.gsub, "abc", "b", function() return print end))
-- numbers as subject and pattern
show(string.find(12345, 34)) show(string.match(3.5, "%d")) show(string.gsub(1.5, "%.", ",")) show(string.gmatch(2026, "%d%d")())
return table.concat(out, "\n")
