"""Cheap lints of the deployment files: yamllint over k8s/ (config in
.yamllint) and a structural lint of the Dockerfile (no Docker or hadolint
in CI: the file is parsed and its stages, packages, user and entrypoint
checked)."""

import fnmatch
import json
import os
import re
import shlex
import unittest

import deploy_support as ds


class YamllintTest(unittest.TestCase):

    def test_yamllint_k8s(self):
        p = ds.run([ds.tool("yamllint"), "--strict", "-c", ds.path(".yamllint"), "k8s/"])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_yaml_files_parse(self):
        for dirpath, _, names in os.walk(ds.K8S):
            for n in names:
                if n.endswith((".yaml", ".yml")):
                    rel = os.path.relpath(os.path.join(dirpath, n), ds.ROOT)
                    self.assertTrue(ds.load_yaml_all(rel), rel + " is empty")


def dockerfile_instructions(text):
    """[(line, INSTRUCTION, args)] with continuations joined and comments
    (also inside continued instructions) dropped."""
    out, buf, start = [], [], None
    for n, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if start is None:
            start = n
        if s.endswith("\\"):
            buf.append(s[:-1])
            continue
        buf.append(s)
        line = " ".join(buf)
        buf = []
        instr, _, args = line.partition(" ")
        out.append((start, instr.upper(), args.strip()))
        start = None
    if buf:
        raise AssertionError("Dockerfile ends inside a continued line")
    return out


class DockerfileTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.text = ds.read("Dockerfile")
        cls.ins = dockerfile_instructions(cls.text)

    def stages(self):
        """{stage name: [instructions]}, in order, plus global ARGs."""
        stages, cur, order = {}, None, []
        global_args = {}
        for line, instr, args in self.ins:
            if instr == "FROM":
                m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
                self.assertTrue(m, "line %d: FROM %s" % (line, args))
                cur = m.group(2) or "stage%d" % len(order)
                self.assertNotIn(cur, stages, "stage %s defined twice" % cur)
                stages[cur] = [("FROM", m.group(1))]
                order.append(cur)
            elif cur is None:
                self.assertIn(instr, ("ARG",), "line %d: only ARG may come before the first FROM" % line)
                k, _, v = args.partition("=")
                global_args[k] = v
            else:
                stages[cur].append((instr, args))
        return stages, order, global_args

    def resolve(self, image, global_args):
        return re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m.group(1), ""), image)

    def test_known_instructions(self):
        known = {"FROM", "ARG", "ENV", "RUN", "COPY", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD",
                 "LABEL", "HEALTHCHECK", "STOPSIGNAL", "VOLUME", "SHELL"}
        for line, instr, _ in self.ins:
            self.assertIn(instr, known, "line %d: unknown or unwanted instruction %s" % (line, instr))
        self.assertNotIn("ADD", {i for _, i, _ in self.ins}, "COPY, not ADD")

    def test_stages(self):
        stages, order, gargs = self.stages()
        self.assertIn("build", stages)
        self.assertEqual(order[-1], "runtime", "the last stage is the runtime image")
        for name in ("build", "runtime"):
            self.assertEqual(self.resolve(stages[name][0][1], gargs), "debian:12-slim", name)
        build_runs = " ".join(a for i, a in stages["build"] if i == "RUN")
        self.assertIn("scripts/deps.sh", build_runs, "the build stage installs what CI installs")
        # The same build script as CI (scripts/test.sh) and the demo.
        self.assertRegex(build_runs, r"bash scripts/build\.sh \S+ Release")
        self.assertIn("bash scripts/build.sh", ds.read("scripts", "test.sh"), "CI builds with the same script")
        # COPY --from names an earlier stage
        for name in order:
            for instr, args in stages[name]:
                m = re.search(r"--from=(\S+)", args) if instr == "COPY" else None
                if m:
                    self.assertIn(m.group(1), order[: order.index(name)], "COPY --from=%s in %s" % (m.group(1), name))

    def test_runtime_stage(self):
        stages, _, _ = self.stages()
        rt = stages["runtime"]
        runs = " ".join(a for i, a in rt if i == "RUN")
        for pkg in ("libmicrohttpd12", "libcjson1", "libcurl4", "liblua5.4-0", "libsqlite3-0", "libre2-9",
                    "ca-certificates"):
            self.assertRegex(runs, r"(^|\s)%s(\s|;|$)" % re.escape(pkg), "runtime package " + pkg)
        self.assertNotRegex(runs, r"-dev\b", "no development packages in the runtime image")
        self.assertNotIn("deps.sh", runs)
        self.assertIn("--no-install-recommends", runs)
        self.assertIn("rm -rf /var/lib/apt/lists/*", runs)
        users = [a for i, a in rt if i == "USER"]
        self.assertTrue(users, "the runtime stage sets USER")
        self.assertRegex(users[-1], r"^65532(:65532)?$", "numeric non-root user, so runAsNonRoot can verify it")
        idx_user = max(n for n, (i, _) in enumerate(rt) if i == "USER")
        self.assertFalse([i for i, _ in rt[idx_user:] if i == "RUN"], "nothing runs as root after USER")
        self.assertIn("9095", [a for i, a in rt if i == "EXPOSE"])
        ep = [a for i, a in rt if i == "ENTRYPOINT"]
        self.assertEqual(len(ep), 1)
        self.assertEqual(json.loads(ep[0]), ["/usr/local/bin/recoveryd"], "exec form, no shell")
        for i, a in rt:
            if i == "CMD":
                self.assertIsInstance(json.loads(a), list, "CMD in exec form")
        copies = [a for i, a in rt if i == "COPY"]
        dests = {shlex.split(a)[-1].rstrip("/") for a in copies}
        for d in ("/usr/local/bin/recoveryd", "/usr/local/bin/deck", "/etc/recoveryd/playbooks-default",
                  "/usr/share/recoveryd/lua"):
            self.assertIn(d, dests)

    def test_paths_match_the_manifests(self):
        """The Deployment's --exec-allow program and --lua-path exist in the image."""
        self.assertIn("/usr/local/bin/deck", self.text)
        dep = ds.read("k8s", "base", "deployment.yaml")
        self.assertIn("--exec-allow=/usr/local/bin/deck", dep)
        self.assertIn("--lua-path=/usr/share/recoveryd/lua", dep)

    def test_context_sources_exist_and_are_not_ignored(self):
        ignore = [l.strip() for l in ds.read(".dockerignore").splitlines() if l.strip() and not l.startswith("#")]
        need = ["scripts/deps.sh", "scripts/build.sh", "CMakeLists.txt", "src/main.c", "include/recoveryd", "playbooks", "lua",
                "tests/CMakeLists.txt", "cmake/embed.cmake", "ui/index.html"]
        for p in need:
            self.assertTrue(os.path.exists(ds.path(p)), p)
            for pat in ignore:
                pat = pat.rstrip("/")
                self.assertFalse(fnmatch.fnmatch(p, pat) or p.startswith(pat + "/"),
                                 ".dockerignore pattern %r excludes %s" % (pat, p))
        for line, instr, args in self.ins:
            if instr == "COPY" and "--from" not in args:
                for src in shlex.split(args)[:-1]:
                    if src != ".":
                        self.assertTrue(os.path.exists(ds.path(src)), "line %d: COPY %s" % (line, src))


if __name__ == "__main__":
    unittest.main()
