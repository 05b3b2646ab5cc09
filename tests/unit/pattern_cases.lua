local out = {}
local function show(...) local t = table.pack(...) local r = {} for i = 1, t.n do r[#r+1] = tostring(t[i]) end out[#out+1] = table.concat(r, ",") end
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
return table.concat(out, "\n")
