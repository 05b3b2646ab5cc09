"""Shared helpers of the deployment-kit checks (tests/deploy/test_*.py).

Environment (set by ctest, see tests/CMakeLists.txt):
  RECOVERYD_BIN         the built binary (tests that need it are skipped without it)
  RECOVERYD_SOURCE_DIR  repository root (default: two levels above this file)

Tools: promtool (Debian package prometheus), amtool (prometheus-alertmanager),
yamllint, lua5.4 and PyYAML (python3-yaml), all installed by scripts/deps.sh.
A missing tool fails the test with the package to install: CI must never
silently skip these checks. kubectl is optional (CI has none): when present,
the kustomizations are also built with `kubectl kustomize`.
"""

import hashlib
import json
import os
import re
import secrets as _secrets
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("RECOVERYD_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
K8S = os.path.join(ROOT, "k8s")
MONITORING = os.path.join(K8S, "monitoring")

# The kustomizations under k8s/, repository-relative.
TOP = "k8s/kustomization.yaml"                   # `kubectl apply -k k8s/`: the base as it is
BASE = "k8s/base/kustomization.yaml"
MON = "k8s/monitoring/kustomization.yaml"
PRODUCTION = "k8s/overlays/production/kustomization.yaml"
STAGING = "k8s/overlays/staging/kustomization.yaml"
HA = "k8s/overlays/ha/kustomization.yaml"        # several replicas on PostgreSQL (shared mode)
KUSTOMIZATIONS = (TOP, BASE, MON, PRODUCTION, STAGING, HA)
# The overlays that replace only the config (test_deploy_overlays.py); the ha
# overlay changes the Deployment and is checked on its own there.
OVERLAYS = (PRODUCTION, STAGING)

# The config each way of deploying recoveryd ends up with.
CONFIGS = {
    "base": "k8s/base/config/config.lua",
    "production": "k8s/overlays/production/config.lua",
    "staging": "k8s/overlays/staging/config.lua",
}

PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager", "yamllint": "yamllint",
            "lua5.4": "lua5.4"}


def path(*parts):
    return os.path.join(ROOT, *parts)


def read(*parts):
    with open(path(*parts), encoding="utf-8") as f:
        return f.read()


def yaml_module():
    try:
        import yaml  # noqa: F401  (python3-yaml)
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise AssertionError("PyYAML is missing: install python3-yaml (bash scripts/deps.sh)") from e
    return sys.modules["yaml"]


def load_yaml(*parts):
    """The single YAML document of a file."""
    return yaml_module().safe_load(read(*parts))


def load_yaml_all(*parts):
    """Every non-empty YAML document of a file."""
    return [d for d in yaml_module().safe_load_all(read(*parts)) if d is not None]


def tool(name):
    p = shutil.which(name)
    if not p:
        raise AssertionError("%s not found: install the Debian package %s (bash scripts/deps.sh)"
                             % (name, PACKAGES.get(name, name)))
    return p


def run(argv, cwd=None, timeout=120):
    """Run a command; returns CompletedProcess with text output."""
    return subprocess.run(argv, cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout)


def binary():
    b = os.environ.get("RECOVERYD_BIN")
    return b if b and os.access(b, os.X_OK) else None


def config_flags():
    """The long flags of src/config.c's option table: {name: type}."""
    src = read("src", "config.c")
    return {m.group(1): m.group(2) for m in re.finditer(r'\{"([a-z][a-z0-9-]*)", (O_[A-Z]+),', src)}


_METRIC = re.compile(r"\brecoveryd_[a-zA-Z0-9_]+")


def metric_names(text):
    """Every recoveryd_* identifier in a PromQL expression (or any text)."""
    return set(_METRIC.findall(text))


def playbook_alertnames(lua_source):
    """Alert names a playbook's `match` selects: alertname="X" and
    alertname=~"A|B" (a plain alternation of names)."""
    m = re.search(r"^\s*match\s*=\s*\{(.*?)\}", lua_source, re.M | re.S)
    if not m:
        return set()
    names = set()
    for mm in re.finditer(r'alertname\s*(=~|=)\s*\\?"([^"\\]+)\\?"', m.group(1)):
        op, val = mm.group(1), mm.group(2)
        if op == "=":
            names.add(val)
        else:
            for alt in val.split("|"):
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", alt):
                    names.add(alt)
    return names


# ---------------------------------------------------------------- configs

_LUA_TO_JSON = r"""
local f = assert(loadfile(arg[1], "t", {}))
local t = f()
local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end
local function enc(v)
  local ty = type(v)
  if ty == "string" then return str(v)
  elseif ty == "number" or ty == "boolean" then return tostring(v)
  elseif ty ~= "table" then error("cannot encode a " .. ty) end
  local n = #v
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  if n > 0 and #keys == n then
    local out = {}
    for i = 1, n do out[i] = enc(v[i]) end
    return "[" .. table.concat(out, ",") .. "]"
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(keys) do
    if type(k) ~= "string" then error("non-string key " .. tostring(k)) end
    out[#out + 1] = str(k) .. ":" .. enc(v[k])
  end
  return "{" .. table.concat(out, ",") .. "}"
end
io.write(enc(t))
"""


def lua_config(rel):
    """The table a config file returns, as Python data (evaluated by lua5.4
    in an empty environment, as recoveryd's sandbox would)."""
    p = subprocess.run([tool("lua5.4"), "-", path(rel)], input=_LUA_TO_JSON, capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        raise AssertionError("lua5.4 could not evaluate %s:\n%s" % (rel, p.stderr))
    return json.loads(p.stdout)


# ---------------------------------------------------------------- the pod, locally

def secret_data(name):
    """stringData of a Secret of the base's secrets.yaml."""
    for o in load_yaml_all("k8s", "base", "secrets.yaml"):
        if o["metadata"]["name"] == name:
            return o["stringData"]
    raise AssertionError("k8s/base/secrets.yaml has no Secret " + name)


def tokens_template():
    """The tokens file of the recoveryd-auth template."""
    return secret_data("recoveryd-auth")["tokens"]


def fill_tokens(text):
    """The template with each REPLACE-ME digest replaced by the SHA-256 of a
    fresh token: (file text, {principal name: token})."""
    out, tokens = [], {}
    for line in text.splitlines():
        f = line.split("#", 1)[0].split()
        if len(f) >= 3 and f[2].startswith("REPLACE-ME"):
            tok = _secrets.token_urlsafe(32)
            tokens[f[0]] = tok
            line = line.replace(f[2], hashlib.sha256(tok.encode()).hexdigest(), 1)
        out.append(line)
    return "\n".join(out) + "\n", tokens


def write(p, text, mode=0o600):
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(p, mode)
    return p


def local_argv(args, tmp, config, tokens_text, keep=()):
    """The Deployment's container args with every path of the pod replaced by
    a local one in tmp: the given config file, the base's playbook and
    library copies, placeholder secrets (tokens_text for the tokens file), a
    stand-in decK. args: the container's args list (--flag=value). Sinks
    point at a closed local port, so nothing leaves the machine. Flags named
    in keep keep their value (--state as a postgres:// URL)."""
    secrets = os.path.join(tmp, "secrets")
    os.makedirs(secrets, exist_ok=True)
    deck = write(os.path.join(tmp, "deck"), "#!/bin/sh\nexit 0\n", 0o755)
    files = {
        "config": path(config),
        "listen": "127.0.0.1:0",
        "playbooks": path("k8s", "base", "playbooks"),
        "lua-path": path("k8s", "base", "lua"),
        "state": os.path.join(tmp, "journal.db"),
        "webhook-token-file": write(os.path.join(tmp, "webhook-token"), "w" * 32 + "\n"),
        "operator-token-file": write(os.path.join(tmp, "operator-token"), "o" * 32 + "\n"),
        "tokens-file": write(os.path.join(tmp, "tokens"), tokens_text),
        "slack-webhook-url-file": write(os.path.join(tmp, "slack-webhook-url"), "http://127.0.0.1:9/slack\n"),
        "pagerduty-routing-key-file": write(os.path.join(tmp, "pagerduty-routing-key"), "k" * 32 + "\n"),
        "secrets-dir": secrets,
        "exec-allow": deck,
    }
    argv, seen = [], set()
    for a in args:
        if not (a.startswith("--") and "=" in a):
            raise AssertionError("write args as --flag=value: %r" % a)
        k, v = a[2:].split("=", 1)
        if k in keep:
            seen.add(k)
        elif k in files:
            v = files[k]
            seen.add(k)
        elif v.startswith("/"):
            raise AssertionError("--%s=%s is a path of the pod: teach deploy_support.local_argv about it" % (k, v))
        argv.append("--%s=%s" % (k, v))
    missing = set(files) - seen
    if missing:
        raise AssertionError("the Deployment's args lack %s" % ", ".join("--" + m for m in sorted(missing)))
    return argv + ["--pagerduty-url=http://127.0.0.1:9/pagerduty"]
