// The judging page: keyboard first. 0-3 grade the current hit, arrows move, u undoes.
// Every grade is sent at once; the server appends and syncs it before it answers.
"use strict";

const state = { data: null, flat: [], pos: 0, busy: false };
const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function firstUngraded(from) {
  const n = state.flat.length;
  for (let step = 0; step < n; step++) {
    const i = (from + step) % n;
    if (state.flat[i].item.grade === null) return i;
  }
  return -1;
}

function scaleName(grade) {
  const entry = state.data.scale.find((s) => s.grade === grade);
  return entry ? entry.name : "";
}

function renderProgress() {
  const { done, total } = state.data;
  const bar = $("progress");
  bar.dataset.done = done;
  bar.dataset.total = total;
  bar.setAttribute("aria-valuemax", total);
  bar.setAttribute("aria-valuenow", done);
  $("fill").style.width = total ? `${(100 * done) / total}%` : "100%";
  $("progress-text").textContent = `${done} / ${total} graded`;
  $("done").hidden = !(total === 0 || done === total);
  if (total === 0) $("done").textContent = "Nothing to judge in this session.";
}

function card(item, index) {
  const node = el("div", "card");
  node.dataset.media = item.media_id;
  node.dataset.index = index;
  if (item.grade !== null) node.dataset.grade = item.grade;
  const fallback = el("div", "text", item.caption || "(no caption)");
  if (item.thumb) {
    const img = el("img");
    img.alt = item.caption || item.file_name || item.media_id;
    img.referrerPolicy = "no-referrer";
    img.addEventListener("error", () => { img.replaceWith(fallback); });
    img.src = item.thumb;
    node.append(img);
  } else {
    node.append(fallback);
  }
  node.append(el("div", "file", item.file_name || item.media_id));
  const ranks = el("div", "ranks");
  for (const [mode, rank] of Object.entries(item.ranks)) {
    ranks.append(el("span", "rank", `${mode} #${rank}`));
  }
  node.append(ranks);
  const grade = item.grade === null ? "not graded" : `${item.grade} · ${scaleName(item.grade)}`;
  node.append(el("div", item.grade === null ? "grade none" : "grade", grade));
  node.addEventListener("click", () => { state.pos = index; render(); });
  return node;
}

function render() {
  renderProgress();
  if (!state.flat.length) {
    $("query").hidden = true;
    $("hits").replaceChildren();
    return;
  }
  const current = state.flat[state.pos];
  const query = state.data.queries[current.q];
  $("query-pos").textContent = `query ${current.q + 1} of ${state.data.queries.length}`;
  $("query-id").textContent = query.query_id;
  $("query-text").textContent = query.text || "(no query text)";
  const cards = [];
  state.flat.forEach((entry, index) => {
    if (entry.q === current.q) cards.push(card(entry.item, index));
  });
  $("hits").replaceChildren(...cards);
  const active = $("hits").querySelector(`[data-index="${state.pos}"]`);
  if (active) {
    active.classList.add("current");
    active.scrollIntoView({ block: "nearest" });
  }
}

function moveQuery(delta) {
  const target = state.flat[state.pos].q + delta;
  const i = state.flat.findIndex((entry) => entry.q === target);
  if (i >= 0) state.pos = i;
}

async function grade(value) {
  const entry = state.flat[state.pos];
  const query = state.data.queries[entry.q];
  const answer = await call("POST", "/api/grade", {
    query_id: query.query_id, media_id: entry.item.media_id, grade: value,
  });
  entry.item.grade = answer.grade;
  state.data.done = answer.done;
  state.data.total = answer.total;
  const next = firstUngraded((state.pos + 1) % state.flat.length);
  if (next >= 0) state.pos = next;
}

async function undo() {
  const answer = await call("POST", "/api/undo", {});
  state.data.done = answer.done;
  state.data.total = answer.total;
  const i = state.flat.findIndex((entry) =>
    state.data.queries[entry.q].query_id === answer.query_id &&
    entry.item.media_id === answer.media_id);
  if (i >= 0) {
    state.flat[i].item.grade = answer.grade;
    state.pos = i;
  }
}

function actionFor(key) {
  if (/^[0-9]$/.test(key)) return () => grade(Number(key)); // the server refuses 4-9
  if (key === "u" || key === "U") return undo;
  const last = state.flat.length - 1;
  if (key === "ArrowRight") return () => { state.pos = Math.min(state.pos + 1, last); };
  if (key === "ArrowLeft") return () => { state.pos = Math.max(state.pos - 1, 0); };
  if (key === "ArrowDown") return () => moveQuery(1);
  if (key === "ArrowUp") return () => moveQuery(-1);
  return null;
}

async function onKey(event) {
  const modified = event.ctrlKey || event.metaKey || event.altKey;
  const action = modified || !state.flat.length || state.busy ? null : actionFor(event.key);
  if (action) {
    event.preventDefault();
    state.busy = true;
    try {
      await action();
      $("status").textContent = "";
    } catch (err) {
      $("status").textContent = err.message;
    } finally {
      state.busy = false;
      render();
    }
  }
  // How many keys were handled (acted on or not): tests wait on it rather than on time.
  document.body.dataset.handled = String(Number(document.body.dataset.handled || 0) + 1);
}

async function start() {
  try {
    state.data = await call("GET", "/api/state");
  } catch (err) {
    $("status").textContent = `cannot load the session: ${err.message}`;
    return;
  }
  const d = state.data;
  $("who").textContent = `run ${d.run_id} · rater ${d.rater} · top ${d.k}` +
    (d.overlap ? " · overlap (another rater's hits, their grades hidden)" : "");
  $("scale").textContent = d.scale.map((s) => `${s.grade} ${s.name}`).join(" · ");
  d.queries.forEach((query, q) => query.items.forEach((item) => state.flat.push({ q, item })));
  const resume = firstUngraded(0);
  state.pos = resume >= 0 ? resume : 0;
  render();
  document.body.dataset.ready = "true";
}

document.addEventListener("keydown", onKey);
start();
