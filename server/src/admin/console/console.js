// The Sluice operator console: a page on the admin API. The token lives in this page's memory
// only and travels only in the Authorization header. Every value shown is set as text (never as
// markup): descriptor values are client-controlled.
"use strict";

let token = "";

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function showError(message) {
  const e = $("error");
  e.textContent = message;
  e.hidden = !message;
}

// One call to the admin API (or /rlconfig): JSON in and out, the token in a header.
async function call(method, path, body) {
  const headers = { "Authorization": "Bearer " + token };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) { /* plain text */ }
  if (!response.ok) {
    const reason = (data && data.error) || (data && data.detail) || text || response.statusText;
    const what = response.status === 401 ? "401: the admin API refused the token" : response.status + ": " + reason;
    showError(what);
    throw new Error(what);
  }
  showError("");
  return data;
}

// "key=value key=value" → [{key, value}].
function entries(text) {
  return text.trim().split(/\s+/).filter(Boolean).map((pair) => {
    const at = pair.indexOf("=");
    if (at < 1) throw new Error("'" + pair + "' is not key=value");
    return { key: pair.slice(0, at), value: pair.slice(at + 1) };
  });
}

function describe(descriptor) {
  return (descriptor || []).map((e) => e.key + (e.prefix !== undefined ? "^=" + e.prefix : "=" + (e.value || ""))).join(", ");
}

async function explain(event) {
  event.preventDefault();
  const out = $("explain-result");
  out.replaceChildren();
  let body;
  try {
    const lines = $("explain-descriptors").value.split("\n").filter((l) => l.trim());
    body = { domain: $("explain-domain").value, descriptors: lines.map((l) => ({ entries: entries(l) })) };
  } catch (e) { showError(e.message); return; }
  const e = await call("POST", "/admin/explain", body);
  out.appendChild(el("p", "Decision: " + e.code + (e.status ? " (" + e.status + ")" : ""), e.code === "OK" ? "ok" : "over"));
  e.descriptors.forEach((d, i) => {
    const card = el("div", null, "card");
    card.appendChild(el("div", "#" + (i + 1) + " " + d.entries.map((x) => x.key + "=" + x.value).join(", ") + ": " + d.code));
    if (d.walk) {
      const path = d.walk.steps.map((s) => s.key + " by " + s.taken.by + (s.taken.pattern ? " " + s.taken.pattern : "")).join(" → ");
      card.appendChild(el("div", "path: " + (path || "(none)") + "; ended: " + d.walk.ended.result + (d.walk.ended.rule ? " " + d.walk.ended.rule : ""), "muted"));
      for (const s of d.walk.steps) for (const p of s.passed_over) card.appendChild(el("div", "passed over: " + p, "muted"));
    }
    if (d.rule) {
      const flags = ["runtime_override", "request_override", "replaced", "shadow_mode", "quota_mode", "unlimited"].filter((f) => d.rule[f]);
      card.appendChild(el("div", "rule " + d.rule.rule + (flags.length ? " [" + flags.join(", ") + "]" : "")));
    }
    for (const l of d.limits) {
      card.appendChild(el("div", l.name + " (" + l.algorithm + ", " + l.role + "): " + l.used + " of " + l.limit + " used, " + l.remaining + " left, resets in " + l.reset_seconds.toFixed(1) + " s" + (l.over ? ", OVER" : ""), l.over ? "over" : ""));
    }
    out.appendChild(card);
  });
  if (e.problem) out.appendChild(el("pre", JSON.stringify(e.problem, null, 2)));
}

async function loadOverrides() {
  const list = await call("GET", "/admin/overrides");
  const body = $("overrides").tBodies[0];
  body.replaceChildren();
  for (const o of list.overrides) {
    const del = el("button", "Delete");
    del.type = "button";
    del.addEventListener("click", () => call("DELETE", "/admin/overrides/" + encodeURIComponent(o.id)).then(loadOverrides).then(loadAudit));
    const change = ["limit", "concurrency", "weight", "mode"].filter((k) => o[k] !== undefined).map((k) => k + " " + o[k]).join(", ");
    body.appendChild(row([o.id, o.domain, describe(o.descriptor), change, o.expires_at ? new Date(o.expires_at * 1000).toISOString() : "never", o.reason, o.by, del]));
  }
}

async function loadAudit() {
  const list = await call("GET", "/admin/audit?limit=20");
  const body = $("audit").tBodies[0];
  body.replaceChildren();
  for (const a of list.entries) {
    body.appendChild(row([new Date(a.at).toISOString(), a.who, a.action, JSON.stringify(a.target)]));
  }
}

async function setOverride(event) {
  event.preventDefault();
  let body;
  try {
    body = { domain: $("override-domain").value, descriptor: entries($("override-entries").value) };
  } catch (e) { showError(e.message); return; }
  if ($("override-limit").value) body.limit = Number($("override-limit").value);
  if ($("override-ttl").value) body.ttl_seconds = Number($("override-ttl").value);
  if ($("override-reason").value) body.reason = $("override-reason").value;
  await call("PUT", "/admin/overrides", body);
  await loadOverrides();
  await loadAudit();
}

async function loadTop() {
  const select = $("top-rule");
  const rule = select.value;
  const path = rule ? "/admin/top?limit=10&rule=" + encodeURIComponent(rule) : "/admin/top";
  const top = await call("GET", path);
  if (!rule) {
    select.replaceChildren(el("option", ""));
    for (const r of top.rules || []) select.appendChild(el("option", r));
    return;
  }
  const body = $("top").tBodies[0];
  body.replaceChildren();
  for (const c of top.consumers || []) body.appendChild(row([c.descriptor, c.hits, c.error]));
}

async function loadLeases(event) {
  event.preventDefault();
  let body;
  try {
    body = { domain: $("leases-domain").value, descriptor: entries($("leases-entries").value) };
  } catch (e) { showError(e.message); return; }
  const answer = await call("POST", "/admin/leases", body);
  const rows = $("leases").tBodies[0];
  rows.replaceChildren();
  for (const pool of answer.pools) {
    const name = pool.name + " (" + pool.rule + ")";
    const used = pool.in_use + " of " + pool.capacity;
    if (!pool.holders.length) rows.appendChild(row([name, used, "(none)", ""]));
    for (const h of pool.holders) rows.appendChild(row([name, used, h.lease_id, h.expires_in_seconds.toFixed(1)]));
  }
}

async function loadRules() {
  const rules = await call("GET", "/rlconfig");
  $("rules").textContent = typeof rules === "string" ? rules : JSON.stringify(rules, null, 2);
}

function guard(f) {
  return (event) => { Promise.resolve(f(event)).catch((e) => showError(e.message)); };
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", guard(async (event) => {
    event.preventDefault();
    token = $("token").value;
    $("token").value = "";
    $("who").textContent = "signed in";
    await loadOverrides();
    await loadAudit();
    await loadTop();
    await loadRules();
  }));
  $("explain-form").addEventListener("submit", guard(explain));
  $("override-form").addEventListener("submit", guard(setOverride));
  $("overrides-refresh").addEventListener("click", guard(async () => { await loadOverrides(); await loadAudit(); }));
  $("top-refresh").addEventListener("click", guard(loadTop));
  $("top-rule").addEventListener("change", guard(loadTop));
  $("leases-form").addEventListener("submit", guard(loadLeases));
  $("rules-refresh").addEventListener("click", guard(loadRules));
});
