/* recoveryd console (docs/console.md): a single-page app over the HTTP API
 * (docs/http-api.md). No framework and nothing fetched but the API.
 *
 * Every string from the API is put in the page as text (textContent),
 * never parsed as HTML: alert labels come from whoever can fire an alert. */
"use strict";

(() => {
  const TOKEN_KEY = "recoveryd.token";
  const LIVE_KEY = "recoveryd.live";
  const STATES = ["queued", "running", "retry_wait", "awaiting_approval", "succeeded", "failed",
    "cancelled", "budget_exhausted", "paused"];
  const ENDED = new Set(["succeeded", "failed", "cancelled", "budget_exhausted", "paused"]);
  const POLL_LIST = 5000;   /* jobs and approvals pages */
  const POLL_JOB = 2000;    /* a job that has not ended */
  const POLL_HEADER = 10000; /* the pause of everything, the approvals count */
  const PAGE_SIZE = 50;

  const $ = (id) => document.getElementById(id);

  /* ---- DOM ---- */

  /* el("a", {href, class, onclick}, children...): strings become text nodes. */
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "href" && !/^(\/|https?:\/\/)/i.test(String(v))) continue; /* no javascript: */
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    add(e, kids);
    return e;
  }

  function add(parent, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      parent.append(k instanceof Node ? k : String(k));
    }
    return parent;
  }

  function pad(n, w) { return String(n).padStart(w || 2, "0"); }

  function localTime(d, ms) {
    const s = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    return ms ? s + "." + pad(d.getMilliseconds(), 3) : s;
  }

  function ago(d) {
    const s = Math.round((Date.now() - d.getTime()) / 1000);
    const a = Math.abs(s);
    const t = a < 60 ? a + " s" : a < 3600 ? Math.round(a / 60) + " min" :
      a < 86400 ? Math.round(a / 3600) + " h" : Math.round(a / 86400) + " d";
    return s >= 0 ? t + " ago" : "in " + t;
  }

  /* A time of the API (RFC 3339) as local time, with how long ago. */
  function when(iso, opts) {
    if (!iso) return el("span", { class: "muted" }, "—");
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    const o = opts || {};
    let t = localTime(d);
    if (o.clock) t = localTime(d, true).slice(11);
    else if (o.short && t.slice(0, 10) === localTime(new Date()).slice(0, 10)) t = t.slice(11); /* today */
    const text = o.clock ? t : t + (o.noAgo ? "" : " (" + ago(d) + ")");
    return el("time", { datetime: iso, title: iso }, text);
  }

  function seconds(s) {
    if (typeof s !== "number") return "";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return (Math.round(s * 10) / 10) + " s";
    return Math.round(s / 60) + " min";
  }

  function badge(state, cls) {
    return el("span", { class: "badge " + (cls || state || "") }, state || "—");
  }

  function jobHref(id) { return "/ui/jobs/" + encodeURIComponent(id); }

  function labelChips(labels) {
    return el("span", { class: "labels" },
      Object.keys(labels || {}).sort().map((k) => el("span", null, k + "=" + labels[k])));
  }

  function table(head, rows, attrs) {
    return el("div", { class: "table-wrap" },
      el("table", attrs, el("thead", null, el("tr", null, head.map((h) => el("th", null, h)))),
        el("tbody", null, rows)));
  }

  /* ---- notices ---- */

  let noticeTimer = null;
  function notice(text, bad) {
    const n = $("notice");
    n.replaceChildren(text);
    n.className = bad ? "bad" : "ok";
    n.hidden = false;
    clearTimeout(noticeTimer);
    if (!bad) noticeTimer = setTimeout(() => { n.hidden = true; }, 8000);
  }

  /* ---- API ---- */

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    toString() {
      return this.status ? this.status + " " + this.code + ": " + this.message : this.message;
    }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  /* One API call with the bearer token. Returns {status, data, headers};
   * throws ApiError. A 401 ends the session (back to sign-in) unless
   * opts.signin (the sign-in form checks the token itself). */
  async function api(method, path, body, opts) {
    const headers = { "Accept": "application/json" };
    const t = token();
    if (t) headers["Authorization"] = "Bearer " + t;
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, "network", "recoveryd cannot be reached (" + e.message + ")");
    }
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!resp.ok) {
      const err = new ApiError(resp.status, (data && data.error) || "http_" + resp.status,
        (data && data.message) || resp.statusText || "request failed");
      if (resp.status === 401 && !(opts && opts.signin))
        signOut("The server refused your token (401 unauthorized). Sign in again.");
      throw err;
    }
    return { status: resp.status, data, headers: resp.headers };
  }

  /* An error for the user; a 401 already took them to sign-in. */
  function failed(e, what) {
    if (e instanceof ApiError && e.status === 401) return;
    notice((what ? what + ": " : "") + String(e), true);
    if (!(e instanceof ApiError)) console.error(e);
  }

  /* ---- views and polling ---- */

  let view = { alive: false, timers: [], refresh: null };

  function live() { return sessionStorage.getItem(LIVE_KEY) !== "0"; }

  function newView() {
    view.alive = false;
    view.timers.forEach(clearTimeout);
    view = { alive: true, timers: [], refresh: null };
    return view;
  }

  /* Run fn now and every ms while the view lives and Live is on. */
  function poll(v, fn, ms) {
    v.refresh = fn;
    const tick = async () => {
      if (!v.alive) return;
      if (live()) await fn();
      if (v.alive) v.timers.push(setTimeout(tick, ms));
    };
    fn().finally(() => { if (v.alive) v.timers.push(setTimeout(tick, ms)); });
  }

  let headerTimer = null;
  let globalPause = null;
  /* Who signed in (GET /api/v1/whoami): {name, role, playbooks}; null
   * when the server cannot say, and then every action is offered (the
   * server still refuses what the token may not do). */
  let me = null;

  function mayAct(playbook) {
    if (!me) return true;
    if (me.role !== "operator" && me.role !== "admin") return false;
    return !me.playbooks || !playbook || me.playbooks.includes(playbook);
  }

  /* Pausing everything takes an operator limited to no playbook. */
  function mayActOnAll() {
    return mayAct(null) && !(me && me.playbooks);
  }

  async function refreshHeader() {
    try {
      const [pbs, held] = await Promise.all([
        api("GET", "/api/v1/playbooks"),
        api("GET", "/api/v1/jobs?state=awaiting_approval&limit=100")]);
      const list = Array.isArray(pbs.data) ? pbs.data : [];
      const all = list.map((p) => p.paused).find((p) => p && p.scope === "*");
      showGlobalPause(all || null);
      const n = Array.isArray(held.data) ? held.data.length : 0;
      const c = $("approval-count");
      c.textContent = n >= 100 ? "99+" : String(n);
      c.hidden = n === 0;
    } catch (e) {
      failed(e, "Cannot read the pause state");
    }
  }

  function showGlobalPause(p) {
    globalPause = p;
    const b = $("global-pause");
    const btn = $("pause-all");
    if (!p) {
      b.hidden = true;
      btn.textContent = "Pause everything";
      btn.className = "danger";
      return;
    }
    b.replaceChildren(el("strong", null, "Everything is paused"),
      " by " + (p.by || "?") + " since ", when(p.since),
      p.until ? [" until ", when(p.until, { noAgo: true })] : " until resumed",
      p.reason ? ": " + p.reason : "");
    b.hidden = false;
    btn.textContent = "Resume everything";
    btn.className = "primary";
  }

  function startHeader() {
    clearInterval(headerTimer);
    refreshHeader();
    headerTimer = setInterval(() => { if (live()) refreshHeader(); }, POLL_HEADER);
  }

  /* ---- dialog: reason (and duration) for an action ---- */

  /* opts: {title, text, plan, reasonRequired, duration, ok, danger,
   * run(values) -> Promise}. The dialog stays open with the error when run
   * fails, so the user can read it and retry or go back. */
  function ask(opts) {
    const d = $("dialog");
    $("dialog-title").textContent = opts.title;
    $("dialog-text").textContent = opts.text || "";
    const plan = $("dialog-plan");
    plan.replaceChildren(...(opts.plan || []).map((p) => el("li", null, p)));
    plan.hidden = !(opts.plan && opts.plan.length);
    const reason = $("dialog-reason");
    reason.value = "";
    reason.required = !!opts.reasonRequired;
    $("dialog-reason-label").textContent = opts.reasonRequired ? "Reason (required)" : "Reason (optional)";
    $("dialog-for-row").hidden = !opts.duration;
    $("dialog-for").value = "";
    const err = $("dialog-error");
    err.hidden = true;
    const ok = $("dialog-ok");
    ok.textContent = opts.ok || "OK";
    ok.className = opts.danger ? "danger" : "primary";
    ok.disabled = false;
    const form = $("dialog-form");
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const r = reason.value.trim();
      if (opts.reasonRequired && !r) {
        err.textContent = "A reason is required: it goes to the audit trail.";
        err.hidden = false;
        reason.focus();
        return;
      }
      const values = { reason: r };
      const f = $("dialog-for").value;
      if (opts.duration && f) values.for = Number(f);
      ok.disabled = true;
      try {
        await opts.run(values);
        d.close();
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) { d.close(); return; }
        err.textContent = String(e);
        err.hidden = false;
      } finally {
        ok.disabled = false;
      }
    };
    $("dialog-cancel").onclick = () => d.close();
    d.showModal();
    reason.focus();
  }

  function body(values) {
    const b = {};
    if (values.reason) b.reason = values.reason;
    if (values.for) b.for = values.for;
    return b;
  }

  function cancelJob(rec, after) {
    ask({
      title: "Cancel job " + rec.id.slice(0, 12), reasonRequired: true, ok: "Cancel job", danger: true,
      text: "Stop " + rec.playbook + ": no further attempt; a running one stops at once.",
      run: async (v) => {
        const r = await api("POST", "/api/v1/jobs/" + encodeURIComponent(rec.id) + "/cancel", body(v));
        notice("Job " + rec.id.slice(0, 12) + ": " + ((r.data && r.data.state) || "cancelled"));
        after();
      },
    });
  }

  function approveJob(rec, after) {
    ask({
      title: "Approve the plan of " + rec.playbook, ok: "Approve and run", plan: rec.plan,
      text: "The playbook runs for real and makes these writes:",
      run: async (v) => {
        await api("POST", "/api/v1/jobs/" + encodeURIComponent(rec.id) + "/approve", body(v));
        notice("Approved: job " + rec.id.slice(0, 12) + " runs now");
        after();
      },
    });
  }

  function rejectJob(rec, after) {
    ask({
      title: "Reject the plan of " + rec.playbook, reasonRequired: true, ok: "Reject", danger: true,
      text: "The job ends without changing anything.",
      run: async (v) => {
        await api("POST", "/api/v1/jobs/" + encodeURIComponent(rec.id) + "/reject", body(v));
        notice("Rejected: job " + rec.id.slice(0, 12));
        after();
      },
    });
  }

  function pauseAll() {
    if (globalPause) {
      ask({
        title: "Resume everything", ok: "Resume everything",
        text: "Alerts run their playbooks again.",
        run: async (v) => {
          await api("POST", "/api/v1/resume", body(v));
          notice("Everything resumed");
          await refreshHeader();
          if (view.refresh) view.refresh();
        },
      });
      return;
    }
    ask({
      title: "Pause everything", reasonRequired: true, duration: true, ok: "Pause everything", danger: true,
      text: "No playbook runs until resumed: each alert gets a paused job and is escalated. " +
        "Running attempts finish.",
      run: async (v) => {
        await api("POST", "/api/v1/pause", body(v));
        notice("Everything paused");
        await refreshHeader();
        if (view.refresh) view.refresh();
      },
    });
  }

  /* ---- sign-in ---- */

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearInterval(headerTimer);
    if ($("dialog").open) $("dialog").close();
    renderSignin(message);
  }

  function renderSignin(message) {
    newView();
    $("top").hidden = true;
    $("global-pause").hidden = true;
    $("notice").hidden = true;
    document.title = "Sign in · recoveryd";
    const input = el("input", { type: "password", id: "token", name: "token", autocomplete: "off",
      required: true, "aria-describedby": "signin-help" });
    const msg = el("p", { id: "signin-error", class: "error", role: "alert", hidden: !message }, message || "");
    const btn = el("button", { type: "submit", class: "primary", id: "signin" }, "Sign in");
    const form = el("form", { class: "card signin", id: "signin-form" },
      el("h1", null, "recoveryd"),
      el("label", { for: "token" }, "Bearer token"), input,
      el("p", { class: "muted small", id: "signin-help" },
        "Your recoveryd token (from the tokens file's owner). It is kept in this browser tab " +
        "only and sent as Authorization: Bearer."),
      msg, btn);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      btn.disabled = true;
      sessionStorage.setItem(TOKEN_KEY, t);
      try {
        await api("GET", "/api/v1/playbooks", undefined, { signin: true });
        start();
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        msg.textContent = e.status === 401 ? "That token was refused (401 unauthorized). Check it and try again."
          : e.status === 403 ? "This token may not read the console (403 forbidden): " + e.message
            : "Cannot sign in: " + String(e);
        msg.hidden = false;
        btn.disabled = false;
        input.select();
      }
    });
    $("main").replaceChildren(form);
    input.focus();
  }

  /* ---- router ---- */

  function go(path) {
    history.pushState(null, "", path);
    render();
  }

  function pathParts() {
    const rest = location.pathname.replace(/^\/ui\/?/, "");
    try {
      return rest.split("/").filter(Boolean).map(decodeURIComponent);
    } catch (e) {
      return ["?"];
    }
  }

  function render() {
    if (!token()) { renderSignin(); return; }
    const v = newView();
    const p = pathParts();
    let page = "jobs";
    if (p.length === 0 || (p.length === 1 && p[0] === "jobs")) jobsPage(v);
    else if (p.length === 2 && p[0] === "jobs") jobPage(v, p[1]);
    else if (p.length === 1 && p[0] === "approvals") { page = "approvals"; approvalsPage(v); }
    else if (p.length === 1 && p[0] === "playbooks") { page = "playbooks"; playbooksPage(v); }
    else {
      page = "";
      document.title = "Not found · recoveryd";
      $("main").replaceChildren(el("h1", null, "No such page"),
        el("p", null, el("a", { href: "/ui/jobs" }, "Go to the jobs")));
    }
    for (const a of document.querySelectorAll("nav a"))
      a.classList.toggle("current", a.dataset.page === page);
  }

  async function start() {
    me = null;
    try {
      me = (await api("GET", "/api/v1/whoami")).data;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return;
    }
    $("whoami").textContent = me ? me.name + " (" + me.role + ")" : "";
    $("whoami").hidden = !me;
    $("pause-all").hidden = !mayActOnAll();
    $("top").hidden = false;
    $("notice").hidden = true;
    startHeader();
    render();
  }

  /* Links inside the console change the view without a reload; a click
   * with a modifier (new tab) is left to the browser. */
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest && ev.target.closest("a[href^='/ui/']");
    if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey)
      return;
    ev.preventDefault();
    go(a.getAttribute("href"));
  });
  window.addEventListener("popstate", render);

  /* ---- jobs ---- */

  const FILTERS = ["state", "playbook", "alertname", "since", "until"];

  /* datetime-local value -> epoch seconds (the API takes both forms). */
  function epoch(local) {
    const t = new Date(local).getTime();
    return isNaN(t) ? "" : String(Math.floor(t / 1000));
  }

  /* The next page of a list, from its Link header; only a path of this
   * API is followed (the token goes with it). */
  function nextLink(headers) {
    const link = headers.get("Link") || "";
    for (const part of link.split(",")) {
      const m = /<([^>]*)>\s*;\s*rel="?next"?/.exec(part);
      if (m && m[1].startsWith("/api/v1/jobs?")) return m[1];
    }
    return null;
  }

  function jobsPage(v) {
    document.title = "Jobs · recoveryd";
    const q = new URLSearchParams(location.search);
    const f = {};
    for (const k of FILTERS) f[k] = q.get(k) || "";
    const stateSel = el("select", { id: "f-state", name: "state" }, el("option", { value: "" }, "any state"),
      STATES.map((s) => el("option", { value: s, selected: f.state === s }, s)));
    const pbInput = el("input", { id: "f-playbook", name: "playbook", list: "playbook-names", value: f.playbook,
      placeholder: "any playbook", autocomplete: "off" });
    const names = el("datalist", { id: "playbook-names" });
    const alertInput = el("input", { id: "f-alertname", name: "alertname", value: f.alertname,
      placeholder: "any alertname", autocomplete: "off" });
    const since = el("input", { id: "f-since", name: "since", type: "datetime-local", value: f.since });
    const until = el("input", { id: "f-until", name: "until", type: "datetime-local", value: f.until });
    const field = (label, input) => el("div", null, el("label", { for: input.id }, label), input);
    const form = el("form", { class: "filters", id: "job-filters" },
      field("State", stateSel), field("Playbook", pbInput), names, field("Alert name", alertInput),
      field("Created from", since), field("Created until", until),
      el("div", null, el("span", { class: "toolbar" },
        el("button", { type: "submit", class: "primary" }, "Filter"),
        el("button", { type: "button", id: "f-clear", onclick: () => go("/ui/jobs") }, "Clear"))));
    const status = el("span", { class: "muted small", id: "jobs-status" });
    const newer = el("button", { type: "button", id: "newer", disabled: true }, "← Newer");
    const older = el("button", { type: "button", id: "older", disabled: true }, "Older →");
    const rows = el("div", { id: "jobs" });
    /* On a phone the filters fold away unless some are set. */
    const filtering = FILTERS.some((k) => f[k]);
    const box = el("details", { class: "card", id: "filters-box",
      open: filtering || window.matchMedia("(min-width: 600px)").matches },
      el("summary", null, filtering ? "Filters (set)" : "Filters"), form);
    $("main").replaceChildren(el("h1", null, "Jobs"), box, rows,
      el("div", { class: "toolbar" }, newer, older, status));

    api("GET", "/api/v1/playbooks").then((r) => {
      add(names, (r.data || []).map((p) => el("option", { value: p.name })));
    }).catch(() => {});

    const params = new URLSearchParams();
    if (f.state) params.set("state", f.state);
    if (f.playbook) params.set("playbook", f.playbook);
    if (f.alertname) params.set("alertname", f.alertname);
    if (f.since && epoch(f.since)) params.set("since", epoch(f.since));
    if (f.until && epoch(f.until)) params.set("until", epoch(f.until));
    /* ?limit= of the page URL goes to the API as it is: a bad one is its 400 */
    params.set("limit", q.get("limit") || String(PAGE_SIZE));
    const pages = ["/api/v1/jobs?" + params.toString()]; /* newest first; the last is shown */
    let next = null;

    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const u = new URLSearchParams();
      const vals = { state: stateSel.value, playbook: pbInput.value.trim(), alertname: alertInput.value.trim(),
        since: since.value, until: until.value };
      for (const k of FILTERS) if (vals[k]) u.set(k, vals[k]);
      if (q.get("limit")) u.set("limit", q.get("limit"));
      go("/ui/jobs" + (u.toString() ? "?" + u.toString() : ""));
    });
    newer.addEventListener("click", () => { pages.pop(); load(); });
    older.addEventListener("click", () => { if (next) { pages.push(next); load(); } });

    async function load() {
      const url = pages[pages.length - 1];
      try {
        const r = await api("GET", url);
        if (!v.alive) return;
        next = nextLink(r.headers);
        const list = Array.isArray(r.data) ? r.data : [];
        rows.replaceChildren(list.length ? jobsTable(list)
          : el("p", { class: "card muted" }, pages.length > 1 ? "No older jobs." : "No jobs match."));
        status.textContent = "Page " + pages.length + " · updated " + localTime(new Date()).slice(11) +
          (live() ? " · live" : " · paused");
        status.classList.remove("error");
      } catch (e) {
        if (!v.alive || e.status === 401) return;
        next = null;
        status.textContent = "";
        rows.replaceChildren(el("p", { class: "card error", id: "jobs-error", role: "alert" },
          "Cannot list the jobs: " + String(e)));
      }
      newer.disabled = pages.length === 1;
      older.disabled = !next;
    }
    poll(v, load, POLL_LIST);
  }

  function jobsTable(list) {
    const rows = list.map((j) => el("tr", { "data-job": j.id },
      el("td", { class: "when" }, when(j.created_at, { short: true })),
      el("td", null, badge(j.state), j.dry_run ? [" ", el("span", { class: "tag" }, "dry-run")] : null),
      el("td", null, j.playbook),
      el("td", null, j.alertname || (j.labels && j.labels.alertname) || el("span", { class: "muted" }, "—")),
      el("td", null, j.trigger || "", j.triggered_by ? el("div", { class: "muted small" }, j.triggered_by) : null),
      el("td", { class: "wrap" }, j.outcome || "", j.error ? el("div", { class: "muted small" }, clip(j.error, 160)) : null),
      el("td", null, el("a", { href: jobHref(j.id), class: "mono" }, j.id.slice(0, 12)))));
    return table(["Created", "State", "Playbook", "Alert", "Trigger", "Outcome", "Job"], rows, { id: "jobs-table" });
  }

  function clip(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  /* ---- one job ---- */

  function jobPage(v, id) {
    document.title = "Job " + id.slice(0, 12) + " · recoveryd";
    const open = new Set(); /* <details> the user opened survive a refresh */
    const box = el("div", { id: "job" }, el("p", { class: "muted" }, "Loading…"));
    $("main").replaceChildren(el("p", null, el("a", { href: "/ui/jobs" }, "← Jobs")), box);
    let ended = false;
    async function load() {
      if (ended) return;
      try {
        const r = await api("GET", "/api/v1/jobs/" + encodeURIComponent(id));
        if (!v.alive) return;
        box.replaceChildren(jobView(r.data, open, load));
        ended = ENDED.has(r.data.state);
      } catch (e) {
        if (!v.alive || e.status === 401) return;
        box.replaceChildren(el("p", { class: "card error", role: "alert" },
          e.status === 404 ? "No job with id " + id + "." : "Cannot read the job: " + String(e)));
      }
    }
    poll(v, async () => { await load(); }, POLL_JOB);
    v.refresh = async () => { ended = false; await load(); };
  }

  /* [name, value, wide]: a grid of fields; a wide one takes a whole row. */
  function dl(pairs) {
    return el("dl", { class: "summary" }, pairs.filter((p) => p && p[1] !== undefined).map(
      ([k, val, wide]) => el("div", { class: wide ? "wide" : null }, el("dt", null, k),
        el("dd", null, val === null || val === "" ? el("span", { class: "muted" }, "—") : val))));
  }

  function jobView(rec, open, reload) {
    const after = () => { reload(); refreshHeader(); };
    const isEnded = ENDED.has(rec.state);
    const buttons = [];
    /* A viewer, or a playbook outside the token's list: nothing to press. */
    if (mayAct(rec.playbook)) {
      if (rec.state === "awaiting_approval") {
        buttons.push(el("button", { type: "button", class: "primary", id: "approve", onclick: () => approveJob(rec, after) }, "Approve…"));
        buttons.push(el("button", { type: "button", class: "danger", id: "reject", onclick: () => rejectJob(rec, after) }, "Reject…"));
      }
      if (!isEnded)
        buttons.push(el("button", { type: "button", class: "danger", id: "cancel", onclick: () => cancelJob(rec, after) }, "Cancel job…"));
    }
    const alert = rec.alert || {};
    const ap = rec.approval;
    const out = [
      el("h1", null, "Job ", el("span", { class: "mono" }, rec.id), badge(rec.state, rec.state + " job-state"),
        rec.dry_run ? el("span", { class: "tag" }, "dry-run") : null),
      buttons.length ? el("div", { class: "actions" }, buttons) : null,
      el("section", { class: "card" }, dl([
        ["State", badge(rec.state)],
        ["Outcome", rec.outcome],
        ["Playbook", el("a", { href: "/ui/playbooks#pb-" + encodeURIComponent(rec.playbook) }, rec.playbook)],
        ["Trigger", (rec.trigger || "") + (rec.reason ? ": " + rec.reason : "")],
        ["Triggered by", rec.triggered_by],
        rec.cancelled_by ? ["Cancelled by", rec.cancelled_by] : null,
        ap ? ["Approval", ap.state + (ap.approved_by ? " by " + ap.approved_by : "")] : null,
        ["Attempts", (rec.attempts_made || 0) + " of " + (rec.max_attempts || "?")],
        ["Notifications", rec.notifications],
        ["Created", when(rec.created_at)],
        ["Started", when(rec.started_at)],
        ["Ended", when(rec.ended_at)],
        rec.next_attempt_at ? [rec.state === "awaiting_approval" ? "Approval times out" : "Next attempt", when(rec.next_attempt_at)] : null,
        rec.error ? ["Error", el("span", { id: "job-error", class: "error" }, rec.error), true] : null,
        ["Alert", labelChips(alert.labels), true],
        ["Key", el("span", { class: "mono" }, rec.key), true],
      ])),
    ];
    if (Array.isArray(rec.plan)) {
      out.push(el("h2", null, "Plan"), el("section", { class: "card", id: "plan" },
        rec.plan.length ? el("ol", { class: "plan" }, rec.plan.map((p) => el("li", null, p)))
          : el("p", { class: "muted" }, "The plan makes no write."),
        rec.plan_diff ? planDiff(rec.plan_diff) : null));
    }
    out.push(el("h2", null, "Timeline"), timeline(rec, open));
    out.push(el("h2", null, "Escalations"), escalations(rec.escalations || []));
    out.push(el("h2", null, "Events"), events(rec.events || []));
    if (alert.annotations && Object.keys(alert.annotations).length)
      out.push(el("h2", null, "Annotations"), el("section", { class: "card" },
        dl(Object.keys(alert.annotations).sort().map((k) => [k, alert.annotations[k], true]))));
    if (rec.events_truncated)
      out.push(el("p", { class: "muted small" }, "Only the newest 1000 actions, log lines and events are shown."));
    return el("div", null, out);
  }

  function planDiff(d) {
    if (d.matches) return el("p", null, badge("run matched the plan", "ok"));
    return el("div", null, el("p", null, badge("run differed from the plan", "bad")),
      d.unplanned && d.unplanned.length ? [el("h3", null, "Not in the plan"), el("ol", { class: "plan" }, d.unplanned.map((p) => el("li", null, p)))] : null,
      d.not_run && d.not_run.length ? [el("h3", null, "Planned but not run"), el("ol", { class: "plan" }, d.not_run.map((p) => el("li", null, p)))] : null);
  }

  function details(open, key, summary, content) {
    const d = el("details", { open: open.has(key) }, el("summary", null, summary), content);
    d.addEventListener("toggle", () => { if (d.open) open.add(key); else open.delete(key); });
    return d;
  }

  /* One action of a job: what it did and what came back. */
  function actionItem(a, open, key) {
    const what = [];
    if (a.kind === "http") {
      what.push(el("span", { class: "mono" }, (a.method || "") + " " + (a.url || "")), " → ");
      if (a.planned) what.push(el("span", { class: "planned" }, "PLANNED"), a.body_bytes !== undefined ? " (" + a.body_bytes + " bytes)" : "");
      else if (a.status !== undefined) what.push(el("strong", null, String(a.status)));
      else if (a.error) what.push(el("span", { class: "error" }, a.error));
    } else if (a.kind === "exec") {
      what.push(el("span", { class: "mono" }, (a.argv || []).map(shellWord).join(" ")), " → ");
      if (a.planned) what.push(el("span", { class: "planned" }, "PLANNED"));
      else if (a.error) what.push(el("span", { class: "error" }, a.error));
      else what.push("exit " + (a.code === undefined || a.code === null ? "?" : a.code) + (a.signal ? " (signal " + a.signal + ")" : ""));
      if (a.mutates === false) what.push(" ", el("span", { class: "tag" }, "read-only"));
      if (a.stdout || a.stderr)
        what.push(details(open, key, "output", [a.stdout ? el("pre", null, a.stdout) : null,
          a.stderr ? [el("div", { class: "muted small" }, "stderr"), el("pre", null, a.stderr)] : null]));
    } else if (a.kind === "sleep") {
      what.push("sleep " + seconds(a.seconds));
    } else {
      what.push(JSON.stringify(a));
    }
    if (a.in_plan === false) what.push(" ", el("span", { class: "badge bad" }, "not in plan"));
    if (typeof a.duration_seconds === "number" && !a.planned) what.push(el("span", { class: "muted small" }, " " + seconds(a.duration_seconds)));
    return el("li", { class: "item action " + a.kind }, el("span", { class: "ts" }, when(a.ts, { clock: true })),
      el("span", { class: "kind" }, a.kind), el("span", null, what));
  }

  function shellWord(s) {
    s = String(s);
    return /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : "'" + s.replace(/'/g, "'\\''") + "'";
  }

  function logItem(l) {
    return el("li", { class: "item log log-" + l.level }, el("span", { class: "ts" }, when(l.ts, { clock: true })),
      el("span", { class: "kind" }, l.level || "log"),
      el("span", null, l.msg, l.fields ? el("span", { class: "mono muted small" }, " " + JSON.stringify(l.fields)) : null));
  }

  function byTs(a, b) { return String(a.ts || "").localeCompare(String(b.ts || "")); }

  function timeline(rec, open) {
    const acts = rec.actions || [];
    const logs = rec.log || [];
    const attempts = rec.attempts || [];
    if (!attempts.length && !acts.length && !logs.length)
      return el("p", { class: "card muted", id: "timeline" }, "No attempt yet.");
    const items = (n) => acts.map((a, i) => ({ ts: a.ts, attempt: a.attempt, node: () => actionItem(a, open, "out-" + i) }))
      .concat(logs.map((l) => ({ ts: l.ts, attempt: l.attempt, node: () => logItem(l) })))
      .filter((x) => x.attempt === n).sort(byTs).map((x) => x.node());
    const known = new Set(attempts.map((a) => a.n));
    const list = attempts.map((at) => el("li", { class: "attempt " + (at.result || "running"), "data-attempt": at.n },
      el("h3", null, "Attempt " + at.n + " ", badge(at.result || "running", at.result || "running"),
        el("span", { class: "muted small" }, " ", when(at.started_at, { noAgo: true }),
          at.ended_at && at.started_at ? " · " + seconds((new Date(at.ended_at) - new Date(at.started_at)) / 1000) : "")),
      at.error ? el("div", { class: "error" }, at.error) : null,
      at.verify ? el("div", { class: "verify" }, "verify: ", badge(at.verify.ok ? "ok" : "failed", at.verify.ok ? "ok" : "bad"),
        at.verify.reason ? " " + at.verify.reason : "") : null,
      el("ol", null, items(at.n))));
    const stray = acts.concat(logs).filter((x) => !known.has(x.attempt));
    if (stray.length)
      list.push(el("li", { class: "attempt" }, el("h3", null, "Outside any attempt"),
        el("ol", null, stray.sort(byTs).map((x, i) => x.kind ? actionItem(x, open, "stray-" + i) : logItem(x)))));
    return el("ol", { class: "timeline card", id: "timeline" }, list);
  }

  function escalations(rows) {
    if (!rows.length) return el("p", { class: "card muted", id: "escalations" }, "None.");
    return table(["Sink", "Kind", "Reason", "State", "Sends", "Last answer", "Updated"], rows.map((e) => el("tr", null,
      el("td", null, e.sink), el("td", null, e.kind), el("td", null, e.reason || ""),
      el("td", null, badge(e.state)), el("td", null, String(e.attempts === undefined ? "" : e.attempts)),
      el("td", { class: "wrap" }, e.last_answer || el("span", { class: "muted" }, "—"),
        e.next_attempt_at ? el("div", { class: "muted small" }, "next send ", when(e.next_attempt_at)) : null),
      el("td", null, when(e.updated_at)))), { id: "escalations" });
  }

  function events(list) {
    if (!list.length) return el("p", { class: "card muted", id: "events" }, "None.");
    return table(["Time", "Event", "Who", "Reason"], list.slice().sort(byTs).map((e) => el("tr", { class: "event " + e.type },
      el("td", null, when(e.ts, { noAgo: true })),
      el("td", null, e.type === "admission" ? "admission: " + e.decision + (e.trigger ? " (" + e.trigger + ")" : "")
        : e.type === "audit" ? el("strong", null, e.action) : e.type),
      el("td", null, e.principal ? e.principal + (e.role ? " (" + e.role + ")" : "") + (e.address ? " from " + e.address : "") : ""),
      el("td", { class: "wrap" }, e.reason || ""))), { id: "events" });
  }

  /* ---- approvals ---- */

  function approvalsPage(v) {
    document.title = "Approvals · recoveryd";
    const box = el("div", { id: "approvals" });
    $("main").replaceChildren(el("h1", null, "Approvals"),
      el("p", { class: "muted" }, "Jobs of playbooks with approval.required made a dry-run plan and wait for a human."),
      box);
    async function load() {
      try {
        const r = await api("GET", "/api/v1/jobs?state=awaiting_approval&limit=100");
        const recs = await Promise.all((r.data || []).map((j) =>
          api("GET", "/api/v1/jobs/" + encodeURIComponent(j.id)).then((x) => x.data).catch(() => j)));
        if (!v.alive) return;
        const after = () => { load(); refreshHeader(); };
        box.replaceChildren(...(recs.length ? recs.map((rec) => approvalCard(rec, after))
          : [el("p", { class: "card muted" }, "Nothing awaits approval.")]));
      } catch (e) {
        if (!v.alive || e.status === 401) return;
        box.replaceChildren(el("p", { class: "card error", role: "alert" }, "Cannot list the approvals: " + String(e)));
      }
    }
    poll(v, load, POLL_LIST);
  }

  function approvalCard(rec, after) {
    const held = rec.state === "awaiting_approval";
    return el("section", { class: "card approval", "data-job": rec.id },
      el("h2", null, rec.playbook, " ", el("a", { href: jobHref(rec.id), class: "mono small" }, rec.id.slice(0, 12))),
      dl([
        ["Alert", labelChips((rec.alert || {}).labels), true],
        ["Created", when(rec.created_at)],
        ["Times out", when(rec.next_attempt_at)],
        ["Triggered by", rec.triggered_by],
      ]),
      el("h3", null, "Plan"),
      Array.isArray(rec.plan) ? (rec.plan.length ? el("ol", { class: "plan" }, rec.plan.map((p) => el("li", null, p)))
        : el("p", { class: "muted" }, "The plan makes no write.")) : el("p", { class: "muted" }, "Plan not loaded."),
      held && mayAct(rec.playbook) ? el("div", { class: "actions" },
        el("button", { type: "button", class: "primary approve", onclick: () => approveJob(rec, after) }, "Approve…"),
        el("button", { type: "button", class: "danger reject", onclick: () => rejectJob(rec, after) }, "Reject…")) : null);
  }

  /* ---- playbooks ---- */

  function playbooksPage(v) {
    document.title = "Playbooks · recoveryd";
    const box = el("div", { id: "playbooks" }, el("p", { class: "muted" }, "Loading…"));
    const refresh = el("button", { type: "button", id: "pb-refresh" }, "Refresh");
    $("main").replaceChildren(el("h1", null, "Playbooks"), el("div", { class: "toolbar" }, refresh), box);
    async function load() {
      try {
        const r = await api("GET", "/api/v1/playbooks");
        if (!v.alive) return;
        const list = Array.isArray(r.data) ? r.data : [];
        box.replaceChildren(...(list.length ? list.map((p) => playbookCard(p, load))
          : [el("p", { class: "card muted" }, "No playbook is loaded.")]));
        if (location.hash) {
          const t = document.getElementById(decodeURIComponent(location.hash.slice(1)));
          if (t) t.scrollIntoView();
        }
      } catch (e) {
        if (!v.alive || e.status === 401) return;
        box.replaceChildren(el("p", { class: "card error", role: "alert" }, "Cannot list the playbooks: " + String(e)));
      }
    }
    refresh.addEventListener("click", load);
    /* Not polled: it would wipe a half-typed dry-run form. */
    v.refresh = load;
    load();
  }

  function playbookCard(p, reload) {
    const after = () => { reload(); refreshHeader(); };
    const pause = p.paused;
    const b = p.backoff || {};
    const bud = p.budget || {};
    const appr = p.approval || {};
    const stats = p.stats;
    const pauseBtn = pause && pause.scope !== "*"
      ? el("button", { type: "button", class: "primary resume", onclick: () => ask({
        title: "Resume " + p.name, ok: "Resume",
        run: async (vals) => {
          await api("POST", "/api/v1/playbooks/" + encodeURIComponent(p.name) + "/resume", body(vals));
          notice(p.name + " resumed");
          after();
        },
      }) }, "Resume…")
      : el("button", { type: "button", class: "danger pause", onclick: () => ask({
        title: "Pause " + p.name, reasonRequired: true, duration: true, ok: "Pause", danger: true,
        text: "Its alerts get a paused job and are escalated instead of running it.",
        run: async (vals) => {
          await api("POST", "/api/v1/playbooks/" + encodeURIComponent(p.name) + "/pause", body(vals));
          notice(p.name + " paused");
          after();
        },
      }) }, "Pause…");
    return el("section", { class: "card playbook", id: "pb-" + p.name, "data-playbook": p.name },
      el("h2", null, p.name, " ", pause ? badge("paused", "paused pb-state") : badge("active", "ok pb-state")),
      p.description ? el("p", null, p.description) : null,
      pause ? el("p", { class: "banner paused pause-info" }, pause.scope === "*" ? "Paused with everything" : "Paused",
        " by " + (pause.by || "?") + " since ", when(pause.since),
        pause.until ? [" until ", when(pause.until, { noAgo: true })] : " until resumed",
        pause.reason ? ": " + pause.reason : "") : null,
      dl([
        ["Match", p.match && p.match.length ? el("span", { class: "labels" }, p.match.map((m) => el("span", null, m))) : "every alert", true],
        ["Retries", String(p.retries)],
        ["Timeout", p.timeout + " s per attempt"],
        ["Backoff", b.initial !== undefined ? b.initial + " s × " + b.factor + ", at most " + b.max + " s" : null],
        ["Cooldown", p.cooldown + " s"],
        ["Budget", bud.runs !== undefined ? bud.runs + " runs per " + bud.per + " s" : null],
        ["Escalate", (p.escalate && p.escalate.length ? p.escalate.join(", ") : "nowhere") + (p.escalate_default ? " (default)" : "")],
        ["Approval", appr.required ? "required (times out after " + appr.timeout + " s)" : "not required"],
        p.notify && p.notify.on_success ? ["Notify on success", p.notify.on_success.join(", ")] : null,
        ["Idempotent", p.idempotent ? "yes" : "no"],
        p.file ? ["File", el("span", { class: "mono" }, p.file)] : null,
      ]),
      stats ? playbookStats(stats, bud) : null,
      mayAct(p.name) ? el("div", { class: "actions" }, pauseBtn) : null,
      mayAct(p.name) ? dryRunForm(p) : null);
  }

  /* The optional "stats" of GET /api/v1/playbooks. */
  function playbookStats(s, bud) {
    const last = s.last_job;
    return el("div", { class: "stats" },
      s.budget_used !== undefined ? el("span", null, "Budget used: ", el("strong", null,
        String(s.budget_used) + (bud.runs !== undefined ? " of " + bud.runs : ""))) : null,
      el("span", null, "Last job: ", last ? [el("a", { href: jobHref(last.id), class: "mono" }, String(last.id).slice(0, 12)),
        " ", badge(last.state), last.outcome && last.outcome !== last.state ? " " + last.outcome : "",
        last.ended_at ? [" ", when(last.ended_at)] : ""] : el("span", { class: "muted" }, "none")),
      Array.isArray(s.cooldowns) && s.cooldowns.length ? el("span", null, "In cooldown: ",
        s.cooldowns.map((c, i) => [i ? ", " : "", el("span", { class: "mono" }, c.key), " until ", when(c.until, { noAgo: true })])) : null);
  }

  /* "k=v" lines -> labels, or throws with the bad line. */
  function parseLabels(text) {
    const labels = {};
    text.split("\n").forEach((line, i) => {
      const t = line.trim();
      if (!t || t.startsWith("#")) return;
      const eq = t.indexOf("=");
      if (eq <= 0) throw new Error("line " + (i + 1) + ": expected name=value");
      labels[t.slice(0, eq).trim()] = t.slice(eq + 1).trim();
    });
    if (!Object.keys(labels).length) throw new Error("give at least one label, e.g. alertname=...");
    return labels;
  }

  function dryRunForm(p) {
    const id = "dry-" + p.name;
    const labels = el("textarea", { id: id + "-labels", class: "dry-labels", rows: 3, spellcheck: "false",
      placeholder: "alertname=ServiceDown\nservice=checkout" });
    const reason = el("input", { id: id + "-reason", class: "dry-reason", placeholder: "why (e.g. INC-1234)" });
    const btn = el("button", { type: "submit", class: "primary dry-run" }, "Dry-run");
    const result = el("div", { class: "dry-result", "aria-live": "polite" });
    const form = el("form", null,
      el("label", { for: labels.id }, "Alert labels, one name=value a line"), labels,
      el("label", { for: reason.id }, "Reason"), el("div", null, reason),
      el("div", { class: "actions" }, btn), result);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      let l;
      try {
        l = parseLabels(labels.value);
      } catch (e) {
        result.replaceChildren(el("p", { class: "error" }, e.message));
        return;
      }
      const b = { labels: l };
      if (reason.value.trim()) b.reason = reason.value.trim();
      btn.disabled = true;
      result.replaceChildren(el("p", { class: "muted" }, "Running the dry-run (up to 30 s)…"));
      try {
        const r = await api("POST", "/trigger/" + encodeURIComponent(p.name) + "?dry_run=1&wait=30", b);
        result.replaceChildren(dryRunResult(r));
      } catch (e) {
        if (e.status !== 401) result.replaceChildren(el("p", { class: "error", role: "alert" }, "Refused: " + String(e)));
      } finally {
        btn.disabled = false;
      }
    });
    return el("details", { class: "dry" }, el("summary", null, "Dry-run trigger"),
      el("p", { class: "muted small" }, "Runs the playbook now against these labels: reads run, writes are only planned."), form);
  }

  function dryRunResult(r) {
    const rec = r.data || {};
    if (r.status === 202) {
      const j = (rec.jobs || [])[0];
      if (!j) return el("p", null, "No job was started.");
      return el("p", null, "Decision: ", badge(j.state), j.id ? [" — ", el("a", { href: jobHref(j.id), class: "mono" }, j.id.slice(0, 12)),
        j.state === "queued" || j.state === "coalesced" ? " is still running: follow it there." : ""] : "");
    }
    const acts = rec.actions || [];
    const verify = (rec.attempts || []).filter((a) => a.verify).map((a) => a.verify);
    const open = new Set();
    return el("div", { class: "card plan-result" },
      el("p", null, "Outcome: ", badge(rec.outcome || rec.state, (rec.outcome || "").indexOf("succeeded") >= 0 ? "ok" : "bad"),
        " ", el("a", { href: jobHref(rec.id), class: "mono" }, String(rec.id).slice(0, 12))),
      rec.error ? el("p", { class: "error" }, rec.error) : null,
      acts.length ? el("ol", { class: "timeline" }, acts.map((a, i) => actionItem(a, open, "dry-" + i))) : el("p", { class: "muted" }, "No action."),
      verify.map((vr) => el("p", { class: "verify" }, "verify: ", badge(vr.ok ? "ok" : "failed", vr.ok ? "ok" : "bad"), vr.reason ? " " + vr.reason : "")));
  }

  /* ---- start ---- */

  $("signout").addEventListener("click", () => {
    signOut("Signed out.");
    history.pushState(null, "", "/ui/");
  });
  $("pause-all").addEventListener("click", pauseAll);
  const liveBox = $("live");
  liveBox.checked = live();
  liveBox.addEventListener("change", () => {
    sessionStorage.setItem(LIVE_KEY, liveBox.checked ? "1" : "0");
    if (liveBox.checked) refreshHeader();
    if (view.refresh) view.refresh(); /* and its status says live or paused */
  });
  if (token()) start();
  else renderSignin();
})();
