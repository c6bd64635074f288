// The console's only script: live polling, operator buttons and "try a question".
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
      el("span", {class: "state"}, call.state), " · ", `${Math.round(call.duration_s || 0)} s`);
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

function console_live() {
  const root = document.getElementById("live");
  // Polling, once a second: one small indexed query per open page; measured in the README.
  const tick = async () => {
    try {
      const response = await fetch("/api/v1/live", {credentials: "same-origin"});
      if (response.ok) renderLive(root, await response.json());
    } finally { setTimeout(tick, 1000); }
  };
  tick();
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
