// The console's only script: the live stream (SSE), operator buttons and "try a question".
// Every state-changing request carries the session's CSRF token in X-CSRF-Token.
"use strict";

function csrf() { return document.body.dataset.csrf || ""; }

async function apiPost(path, body) {
  const response = await fetch(path, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
    body: JSON.stringify(body || {}),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => node.setAttribute(k, v));
  children.forEach((c) => node.append(c));
  return node;
}

function renderLive(root, calls) {
  const admin = root.dataset.admin === "yes";
  if (!calls.length) { root.replaceChildren(el("p", {id: "no-calls"}, "No calls in progress.")); return; }
  root.replaceChildren(...calls.map((call) => {
    const card = el("div", {class: "card live-call", "data-sid": call.call_sid},
      el("strong", {}, call.from_number || call.call_sid), " · ",
      el("span", {class: "state"}, call.state), " · ",
      el("span", {class: "duration", "data-since": call.since}, since(call.since)));
    if (call.box) card.append(" · on ", el("span", {class: "box"}, call.box));  // a cluster
    if (admin) {
      ["hangup", "transfer"].forEach((action) => {
        const button = el("button", {class: "action"}, action === "hangup" ? "Hang up" : "Transfer");
        button.onclick = () => apiPost(`/api/v1/live/${call.call_sid}/${action}`)
          .catch((err) => alert(err.message));
        card.append(" ", button);
      });
    }
    call.turns.forEach((t) => card.append(el("div", {class: `turn ${t.role}`},
      el("div", {class: "who"}, t.role === "user" ? "Caller" : "Agent"), t.text)));
    return card;
  }));
}

// Durations count on this browser's clock from what the server measured (clocks may differ).
function arrived(call) { call.since = Date.now() / 1000 - (call.duration_s || 0); return call; }
function since(t) { return `${Math.round(Date.now() / 1000 - t)} s`; }

function console_live() {
  // Pushed, not polled: the server sends a snapshot, then each change as it happens.
  const root = document.getElementById("live");
  const calls = new Map();
  const draw = () => renderLive(root, [...calls.values()]);
  const source = new EventSource("/api/v1/live/stream");
  const on = (event, handle) => source.addEventListener(event, (e) => { handle(JSON.parse(e.data)); draw(); });
  on("snapshot", (all) => { calls.clear(); all.forEach((c) => calls.set(c.call_sid, arrived(c))); });
  on("call", (c) => calls.set(c.call_sid, arrived(c)));
  on("state", (d) => { const c = calls.get(d.call_sid); if (c) c.state = d.state; });
  on("line", (d) => { const c = calls.get(d.call_sid); if (c) c.turns.push({role: d.role, text: d.text}); });
  on("ended", (d) => calls.delete(d.call_sid));
  source.addEventListener("bye", (e) => {
    source.close();
    const reason = JSON.parse(e.data).reason;
    if (reason === "logged out") { window.location = "/console/login?next=/console/live"; return; }
    root.replaceChildren(el("p", {id: "stream-ended"}, `Live view stopped: ${reason}. Reconnecting…`));
    setTimeout(console_live, 5000);
  });
  if (!root.dataset.ticking) {
    root.dataset.ticking = "yes";
    setInterval(() => root.querySelectorAll(".duration").forEach((d) => {
      d.textContent = since(Number(d.dataset.since));
    }), 1000);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("ask-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("answer");
    out.textContent = "Thinking…";
    try {
      const r = await apiPost("/api/v1/kb/ask", {question: form.question.value});
      out.replaceChildren(el("p", {id: "answer-text"}, r.answer),
        ...r.sources.map((s) => el("div", {class: "small source"},
          `source: ${s.source} › ${s.heading} (${s.distance})`)),
        el("div", {class: "small"}, `first token ${r.timings.first_token_s} s · total ${r.timings.total_s} s`));
    } catch (err) { out.textContent = err.message; }
  });
});
