-- A stand-in for the `recovery` module so that pure functions of the helper
-- library can be tested with the stock lua5.4 interpreter. Anything that
-- would do I/O raises: such code is tested against the real daemon instead.
local function refuse(name)
  return function() error("recovery." .. name .. " is not available in Lua unit tests", 2) end
end

local recovery = {
  http = refuse("http"), exec = refuse("exec"), sleep = refuse("sleep"),
  secret = refuse("secret"), env = refuse("env"), read_file = refuse("read_file"),
  now = os.time, dry_run = false,
  fail = function(reason) error({ reason = reason, recoveryd_final = true }, 2) end,
  -- As recoveryd's: error(msg, level) as a permanent error value.
  fatal = function(msg, level)
    level = level or 1
    local where = ""
    local info = level > 0 and debug.getinfo(level + 1, "Sl")
    if info and info.currentline > 0 then where = info.short_src .. ":" .. info.currentline .. ": " end
    error(setmetatable({ reason = where .. msg, recoveryd_final = true, permanent = true },
                       { __tostring = function(e) return e.reason end }), 0)
  end,
  log = { info = function() end, warn = function() end, error = function() end },
  json = { null = setmetatable({}, { __tostring = function() return "null" end }),
           array = function(t) return t or {} end },
}
package.loaded["recovery"] = recovery
_G.recovery = recovery

-- A tiny test runner: t.run{ name = function() ... end, ... }
local t = {}
function t.eq(a, b, msg)
  if a ~= b then error(string.format("%s: expected %s, got %s", msg or "eq", tostring(b), tostring(a)), 2) end
end
function t.ok(v, msg) if not v then error((msg or "expected a true value"), 2) end end
-- fn() raises a permanent error (recovery.fatal) whose message holds text
-- (plain); returns the message.
function t.permanent(fn, text)
  local ok, e = pcall(fn)
  if ok then error("expected a permanent error holding " .. text, 2) end
  if type(e) ~= "table" or e.permanent ~= true or e.recoveryd_final ~= true then
    error("not a permanent error: " .. tostring(e), 2)
  end
  if not tostring(e):find(text, 1, true) then error("'" .. tostring(e) .. "' does not hold " .. text, 2) end
  return tostring(e)
end
function t.run(cases)
  local names, failed = {}, 0
  for name in pairs(cases) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local ok, err = pcall(cases[name])
    print(string.format("%s %s%s", ok and "ok  " or "FAIL", name, ok and "" or (": " .. tostring(err))))
    if not ok then failed = failed + 1 end
  end
  print(string.format("%d tests, %d failed", #names, failed))
  os.exit(failed == 0 and 0 or 1)
end
return t
