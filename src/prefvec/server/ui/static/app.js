// prefvec recipe arena. Every request goes to the public /v1 API, by a URL relative to this page
// (served at <prefix>/ui), with the key the user typed as a Bearer header. The key is kept in this
// tab's sessionStorage only; the server never stores it.

const API = new URL("./", document.baseURI); // <prefix>/ when the page is <prefix>/ui
const KEY_STORE = "prefvec.key";
const WEIGHT = { min: -2, max: 2, step: 0.05 };
const state = { vectors: [], recipes: [], experiments: [], history: [], battle: null, abort: null };

// ------------------------------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

const round2 = (x) => Math.round(x * 100) / 100;
const fmt = (x, digits = 2) => (x === null || x === undefined ? "—" : Number(x).toFixed(digits));
const interval = (lo, hi) => (lo === null || lo === undefined ? "" : ` [${fmt(lo)}, ${fmt(hi)}]`);

function showMessage(id, text, kind = "ok") {
  const box = $(id);
  box.className = `msg ${kind}`;
  box.replaceChildren(el("div", { class: "message" }, text));
}

/** The API's error as it reported it: its message, then each gathered problem. */
function showError(id, err) {
  showMessage(id, err.message, "error");
  const problems = err.problems || [];
  if (problems.length > 1) $(id).append(el("ul", {}, problems.map((p) => el("li", {}, p))));
  if (err.status === 401) $(id).append(el("div", { class: "hint" }, "Enter an API key above."));
}

// ----------------------------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, detail) {
    super(detail.message || `HTTP ${status}`);
    this.status = status;
    this.code = detail.code;
    this.param = detail.param;
    this.problems = detail.problems || [];
  }
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function apiError(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  const detail = body && body.error ? body.error : { message: `HTTP ${resp.status}` };
  return new ApiError(resp.status, detail);
}

async function api(path, { method = "GET", body, form } = {}) {
  const init = { method, headers: headers(body !== undefined) };
  if (form) init.body = form;
  else if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(new URL(path, API), init);
  if (!resp.ok) throw await apiError(resp);
  return resp.json();
}

/** The `data:` payloads of the complete SSE events in `buffer`, and what is left of it. */
function sseEvents(buffer) {
  const events = buffer.split("\n\n");
  const rest = events.pop();
  const data = events
    .map((e) => e.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()))
    .map((lines) => lines.join("\n"))
    .filter((d) => d);
  return [data, rest];
}

/**
 * POST /v1/chat/completions with stream: true; calls onInfo(prefvec block) on the first chunk and
 * onText(text so far) on each delta. Resolves to {text, finish}; throws ApiError on an error.
 */
async function streamChat(body, { onInfo, onText, signal } = {}) {
  const resp = await fetch(new URL("v1/chat/completions", API), {
    method: "POST", headers: headers(true), body: JSON.stringify({ ...body, stream: true }), signal,
  });
  if (!resp.ok) throw await apiError(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const out = { text: "", finish: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return out;
    let data;
    [data, buffer] = sseEvents(buffer + value);
    for (const payload of data) {
      if (payload === "[DONE]") return out;
      readChunk(JSON.parse(payload), out, onInfo, onText);
    }
  }
}

function readChunk(chunk, out, onInfo, onText) {
  if (chunk.error) throw new ApiError(200, chunk.error);
  if (chunk.prefvec && onInfo) onInfo(chunk.prefvec);
  const choice = (chunk.choices || [])[0];
  if (!choice) return;
  if (choice.delta && choice.delta.content) {
    out.text += choice.delta.content;
    if (onText) onText(out.text);
  }
  if (choice.finish_reason) out.finish = choice.finish_reason;
}

// ------------------------------------------------------------------------------ key and status

function initKey() {
  $("key").value = sessionStorage.getItem(KEY_STORE) || "";
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    else sessionStorage.removeItem(KEY_STORE);
    refreshAll();
  });
  $("key-clear").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("key").value = "";
    refreshAll();
  });
}

async function refreshStatus() {
  const box = $("status");
  try {
    const models = await api("v1/models");
    const keyNote = sessionStorage.getItem(KEY_STORE) ? " · key set (this tab)" : "";
    box.textContent = `model ${models.data[0].id} · ${models.data.length - 1} recipes${keyNote}`;
    box.className = "status ok";
    return true;
  } catch (err) {
    box.textContent = err.message;
    box.className = "status error";
    if (err.status === 503) setTimeout(refreshAll, 1000);
    return false;
  }
}

async function refreshAll() {
  const ok = await refreshStatus();
  if (ok) await Promise.allSettled([loadVectors(), loadRecipes(), loadExperiments()]);
  document.body.dataset.ready = ok ? "1" : "0";
  performance.mark("prefvec-ready");
}

// ------------------------------------------------------------------------------------------ tabs

function showTab(panel) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.dataset.panel === panel;
    tab.setAttribute("aria-selected", String(on));
    $(tab.dataset.panel).hidden = !on;
  }
}

function initTabs() {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => {
      showTab(tab.dataset.panel);
      history.replaceState(null, "", `#${tab.dataset.panel}`);
    });
  }
  const fromHash = () => {
    const wanted = location.hash.slice(1);
    if (wanted && $(wanted) && $(wanted).getAttribute("role") === "tabpanel") showTab(wanted);
  };
  window.addEventListener("hashchange", fromHash);
  fromHash();
}

// ---------------------------------------------------------------------------------- playground

function heldOutAccuracy(meta) {
  const scores = meta.eval_scores || {};
  const key = ["val_reward_accuracy", "heldout_accuracy", "accuracy"].find((k) => k in scores)
    || Object.keys(scores).find((k) => k.endsWith("accuracy"));
  return key === undefined ? null : scores[key];
}

function cardLine(v) {
  const meta = v.metadata || {};
  const first = (meta.description || "").split("\n")[0];
  const what = first || `${v.kind} vector, ${meta.method || "?"} extraction`;
  return `${what} · held-out accuracy ${fmt(heldOutAccuracy(meta))}`;
}

function sliderRow(v, value) {
  const input = el("input", {
    type: "range", id: `w-${v.name}`, min: WEIGHT.min, max: WEIGHT.max, step: WEIGHT.step,
    value, dataset: { vector: v.name }, "aria-label": `weight of ${v.name}`,
  });
  const shown = el("output", { id: `wv-${v.name}`, for: `w-${v.name}` }, fmt(value));
  input.addEventListener("input", () => { shown.textContent = fmt(input.value); });
  return el("div", { class: "slider" },
    el("label", { for: `w-${v.name}` }, `${v.name}@${v.version}`), input, shown,
    el("div", { class: "card-line" }, cardLine(v)));
}

function renderSliders() {
  const box = $("pg-sliders");
  const old = sliderWeights(true);
  if (!state.vectors.length) {
    box.replaceChildren(el("p", { class: "muted" }, "no vectors in the store"));
    return;
  }
  box.replaceChildren(...state.vectors.map((v) => sliderRow(v, old[v.name] || 0)));
}

/** {vector: weight} of the sliders (zero weights left out unless `all`). */
function sliderWeights(all = false) {
  const out = {};
  for (const input of document.querySelectorAll("#pg-sliders input[type=range]")) {
    const w = round2(Number(input.value));
    if (all || w !== 0) out[input.dataset.vector] = w;
  }
  return out;
}

function mergeOptions() {
  const method = $("pg-method").value;
  const density = Number($("pg-density").value);
  if (method === "linear" && density === 1) return null;
  return { method, density, seed: Number($("pg-seed").value) || 0 };
}

function sampling() {
  const seed = $("pg-seed").value;
  return {
    temperature: Number($("pg-temperature").value),
    max_tokens: Number($("pg-max-tokens").value),
    seed: seed === "" ? null : Number(seed),
  };
}

function playgroundFields() {
  const weights = sliderWeights();
  if (!Object.keys(weights).length) return {};
  const merge = mergeOptions();
  return merge ? { preferences: weights, merge } : { preferences: weights };
}

function infoLine(info) {
  const vectors = Object.entries(info.vectors || {}).map(([n, v]) => `${n}@${v}`).join(", ");
  return el("div", { class: "info-line" },
    "recipe key ", el("code", { dataset: { field: "recipe_key" } }, info.recipe_key),
    " · serving path ", el("code", { dataset: { field: "path" } }, info.path),
    vectors ? ` · vectors ${vectors}` : "");
}

function renderHistory() {
  const box = $("pg-history");
  box.replaceChildren(...state.history.map((m) => el("div", { class: `bubble ${m.role}` },
    m.content)));
  box.scrollTop = box.scrollHeight;
}

async function playgroundSend() {
  const prompt = $("pg-prompt").value.trim();
  if (!prompt) return;
  $("pg-error").replaceChildren();
  const messages = [...state.history, { role: "user", content: prompt }];
  state.history = messages;
  renderHistory();
  const bubble = el("div", { class: "bubble assistant", id: "pg-reply",
    dataset: { state: "streaming", chunks: "0" } });
  $("pg-history").querySelector("#pg-reply")?.removeAttribute("id");
  $("pg-history").append(bubble);
  $("pg-prompt").value = "";
  await streamIntoBubble(messages, bubble);
}

async function streamIntoBubble(messages, bubble) {
  state.abort = new AbortController();
  $("pg-send").disabled = true;
  $("pg-stop").disabled = false;
  const body = { messages, ...playgroundFields(), ...sampling() };
  const onInfo = (info) => $("pg-info").replaceChildren(infoLine(info));
  const onText = (text) => {
    bubble.textContent = text;
    bubble.dataset.chunks = String(Number(bubble.dataset.chunks) + 1);
  };
  try {
    const out = await streamChat(body, { onInfo, onText, signal: state.abort.signal });
    state.history.push({ role: "assistant", content: out.text });
    Object.assign(bubble.dataset, { state: "done", finish: out.finish || "" });
  } catch (err) {
    bubble.dataset.state = "error";
    if (err.name !== "AbortError") showError("pg-error", err);
    state.history.pop(); // the prompt that got no reply
  } finally {
    $("pg-send").disabled = false;
    $("pg-stop").disabled = true;
  }
}

async function saveRecipe() {
  const merge = mergeOptions() || { method: "linear", density: 1, seed: 0 };
  const body = {
    name: $("pg-recipe-name").value.trim(), weights: sliderWeights(), ...merge,
    description: "saved from the recipe arena",
  };
  try {
    const r = await api("v1/recipes", { method: "POST", body });
    showMessage("pg-save-msg", `saved ${r.name}@${r.version} · ${r.key}`);
    await loadRecipes();
  } catch (err) {
    showError("pg-save-msg", err);
  }
}

function initPlayground() {
  $("pg-send").addEventListener("click", playgroundSend);
  $("pg-prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      playgroundSend();
    }
  });
  $("pg-stop").addEventListener("click", () => state.abort && state.abort.abort());
  $("pg-clear").addEventListener("click", () => {
    state.history = [];
    renderHistory();
    $("pg-info").replaceChildren();
  });
  $("pg-save").addEventListener("click", saveRecipe);
}

// -------------------------------------------------------------------------------- side by side

function sourceOptions() {
  return [
    ["sliders", "Playground sliders"], ["base", "Base model (no vectors)"],
    ...state.recipes.map((r) => [`recipe:${r.name}`, `recipe ${r.name}@${r.version}`]),
    ["custom", "Custom weights…"],
  ];
}

function sourceRow(i, selected, custom) {
  const select = el("select", { id: `sbs-src-${i}`, "aria-label": `column ${i + 1} source` },
    sourceOptions().map(([v, label]) => el("option", { value: v, selected: v === selected }, label)));
  const weights = el("input", { id: `sbs-w-${i}`, placeholder: "helpful=1, harmless=-0.5",
    value: custom, hidden: select.value !== "custom" });
  select.addEventListener("change", () => {
    weights.hidden = select.value !== "custom";
    select.dataset.touched = "1"; // kept across re-renders (a new recipe, more columns)
  });
  return el("div", { class: "source" }, el("span", { class: "col-n" }, `${i + 1}`), select, weights);
}

function defaultSource(i) {
  const recipes = state.recipes.map((r) => `recipe:${r.name}`);
  return recipes[i] || (i === 0 ? "sliders" : "base");
}

function renderSources() {
  const n = Number($("sbs-n").value);
  const rows = [];
  for (let i = 0; i < n; i++) {
    const old = $(`sbs-src-${i}`);
    const keep = old && old.dataset.touched && sourceOptions().some(([v]) => v === old.value);
    const row = sourceRow(i, keep ? old.value : defaultSource(i), $(`sbs-w-${i}`)?.value || "");
    if (keep) row.querySelector("select").dataset.touched = "1";
    rows.push(row);
  }
  $("sbs-sources").replaceChildren(...rows);
}

/** "a=1, b=-0.5" -> {a: 1, b: -0.5}; throws naming the bad part. */
function parseWeights(text, where) {
  const out = {};
  for (const part of text.split(",").map((p) => p.trim()).filter((p) => p)) {
    const [name, value] = part.split("=").map((s) => s.trim());
    const w = Number(value);
    if (!name || value === undefined || value === "" || !Number.isFinite(w)) {
      throw new ApiError(0, { message: `${where}: expected name=weight, got ${JSON.stringify(part)}` });
    }
    out[name] = w;
  }
  return out;
}

function candidate(i) {
  const source = $(`sbs-src-${i}`).value;
  const label = `${i + 1}: ${$(`sbs-src-${i}`).selectedOptions[0].textContent}`;
  if (source === "base") return { label };
  if (source.startsWith("recipe:")) return { label, recipe: source.slice(7) };
  if (source === "sliders") return { label, ...playgroundFields() };
  return { label, preferences: parseWeights($(`sbs-w-${i}`).value, `column ${i + 1}`) };
}

function sbsColumn(i, label) {
  return el("div", { class: "col", id: `sbs-col-${i}` }, el("h3", {}, label),
    el("div", { class: "out", dataset: { state: "streaming", chunks: "0" } }),
    el("div", { class: "info" }), el("div", { class: "scores" }));
}

async function streamColumn(col, cand, prompt, params) {
  const out = col.querySelector(".out");
  const { label, ...fields } = cand;
  try {
    const res = await streamChat({ messages: [{ role: "user", content: prompt }], ...fields,
      ...params }, {
      onInfo: (info) => col.querySelector(".info").replaceChildren(infoLine(info)),
      onText: (text) => {
        out.textContent = text;
        out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
      },
    });
    out.dataset.state = "done";
    return res.text;
  } catch (err) {
    out.dataset.state = "error";
    out.textContent = `${label}: ${err.message}`;
    out.classList.add("error");
    throw err;
  }
}

async function runSideBySide() {
  $("sbs-error").replaceChildren();
  $("sbs-summary").replaceChildren();
  const prompt = $("sbs-prompt").value.trim();
  let cands;
  try {
    cands = Array.from({ length: Number($("sbs-n").value) }, (_, i) => candidate(i));
  } catch (err) {
    showError("sbs-error", err);
    return;
  }
  const params = { temperature: Number($("sbs-temperature").value),
    max_tokens: Number($("sbs-max-tokens").value), seed: 0 };
  const cols = cands.map((c, i) => sbsColumn(i, c.label));
  $("sbs-cols").replaceChildren(...cols);
  $("sbs-cols").dataset.state = "running";
  $("sbs-run").disabled = true;
  const results = await Promise.allSettled(cands.map((c, i) => streamColumn(cols[i], c, prompt,
    params)));
  $("sbs-run").disabled = false;
  if (results.every((r) => r.status === "fulfilled") && $("sbs-score").checked) {
    await scoreColumns(cols, cands, prompt, params, results.map((r) => r.value));
  }
  $("sbs-cols").dataset.state = "done";
}

/** The scorers' numbers under each column, from POST /v1/compare on the same prompt. */
async function scoreColumns(cols, cands, prompt, params, texts) {
  try {
    const res = await api("v1/compare", { method: "POST", body: {
      prompts: [prompt], candidates: cands, max_tokens: params.max_tokens,
      temperature: params.temperature, seed: params.seed } });
    if (!res.summary.scorers.length) {
      showMessage("sbs-summary", "no scorers configured on this server (PREFVEC_SCORERS)", "muted");
      return;
    }
    res.rows[0].outputs.forEach((o, i) => {
      const same = o.text === texts[i] ? "" : " (scored a resample: the text differed)";
      const parts = Object.entries(o.scores).map(([k, v]) => `${k} ${fmt(v, 3)}`);
      cols[i].querySelector(".scores").textContent = parts.join(" · ") + same;
    });
  } catch (err) {
    showError("sbs-summary", err);
  }
}

function initSideBySide() {
  $("sbs-n").addEventListener("change", renderSources);
  $("sbs-run").addEventListener("click", runSideBySide);
  renderSources();
}

// -------------------------------------------------------------------------------------- battle

function currentExperiment() {
  return state.experiments.find((e) => e.name === $("bt-exp").value) || null;
}

function renderExperiments() {
  const select = $("bt-exp");
  const old = select.value;
  const label = (e) => `${e.name} (${e.arms.length} arms${e.status && e.status !== "live"
    ? `, ${e.status}` : ""})`;
  select.replaceChildren(...state.experiments.map((e) => el("option",
    { value: e.name, selected: e.name === old }, label(e))));
  if (!state.experiments.length) select.append(el("option", { value: "" }, "no experiments"));
}

/** Two distinct arms drawn uniformly, in random order (as Chatbot Arena pairs its models). */
function drawPair(arms) {
  const i = Math.floor(Math.random() * arms.length);
  let j = Math.floor(Math.random() * (arms.length - 1));
  if (j >= i) j += 1;
  return [arms[i], arms[j]];
}

function setVotes(enabled) {
  for (const id of ["bt-vote-a", "bt-vote-b", "bt-vote-tie", "bt-vote-bad"]) $(id).disabled = !enabled;
}

async function startBattle() {
  const exp = currentExperiment();
  const prompt = $("bt-prompt").value.trim();
  $("bt-error").replaceChildren();
  $("bt-msg").replaceChildren();
  if (!exp) return showMessage("bt-error", "no experiment selected", "error");
  if (exp.status && exp.status !== "live") {
    return showMessage("bt-error", `experiment ${exp.name} is ${exp.status}: it takes no votes`,
      "error");
  }
  const [a, b] = drawPair(exp.arms);
  const user = `arena-${crypto.randomUUID()}`;
  state.battle = { experiment: exp.name, a, b, user, voted: false };
  setVotes(false);
  for (const side of ["a", "b"]) {
    $(`bt-${side}`).textContent = "";
    $(`bt-${side}`).dataset.state = "streaming";
    $(`bt-name-${side}`).textContent = "hidden until you vote";
  }
  const { temperature, max_tokens, seed } = sampling();
  const ask = (arm, side) => streamChat({ messages: [{ role: "user", content: prompt }],
    recipe: arm.recipe, user, temperature, max_tokens, seed }, {
    onText: (text) => { $(`bt-${side}`).textContent = text; } });
  const results = await Promise.allSettled([ask(a, "a"), ask(b, "b")]);
  results.forEach((r, k) => { $(`bt-${"ab"[k]}`).dataset.state = r.status === "fulfilled" ? "done" : "error"; });
  const failed = results.find((r) => r.status === "rejected");
  if (failed) return showError("bt-error", failed.reason);
  setVotes(true);
}

function feedbackBody(vote) {
  const { experiment, a, b, user } = state.battle;
  if (vote === "b") return { experiment, user, preferred: b.name, rejected: a.name };
  const body = { experiment, user, preferred: a.name, rejected: b.name };
  return vote === "a" ? body : { ...body, outcome: vote };
}

async function vote(kind) {
  if (!state.battle || state.battle.voted) return;
  try {
    await api("v1/feedback", { method: "POST", body: feedbackBody(kind) });
  } catch (err) {
    return showError("bt-msg", err);
  }
  state.battle.voted = true;
  setVotes(false);
  const { a, b } = state.battle;
  $("bt-name-a").textContent = `A was ${a.name} (${a.recipe})`;
  $("bt-name-b").textContent = `B was ${b.name} (${b.recipe})`;
  await loadBoard(); // the message below says the board already counts this vote
  const said = { a: "A is better", b: "B is better", tie: "tie", both_bad: "both bad" }[kind];
  showMessage("bt-msg", `vote recorded: ${said}`);
}

function table(head, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

function leaderboardTable(board) {
  const withBt = board.arms.some((a) => a.bt_score !== null && a.bt_score !== undefined);
  const head = ["arm", "recipe", "battles", "wins", "losses", "ties", "win rate [95% CI]"];
  if (withBt) head.push("Bradley–Terry [bootstrap CI]");
  const rows = board.arms.map((a) => {
    const row = [a.arm, a.recipe, a.battles, a.wins, a.losses, a.ties,
      fmt(a.win_rate) + interval(a.win_rate_ci_low, a.win_rate_ci_high)];
    if (withBt) row.push(fmt(a.bt_score) + interval(a.bt_ci_low, a.bt_ci_high));
    return row;
  });
  return [el("p", { class: "muted" }, `${board.n_votes} votes`), table(head, rows)];
}

function reportTable(report) {
  const rows = report.arms.map((a) => [a.name, a.recipe, a.pairwise_wins, a.pairwise_losses,
    a.pairwise_ties ?? "—", fmt(a.pairwise_win_rate) + interval(a.pairwise_ci_low,
      a.pairwise_ci_high)]);
  const head = ["arm", "recipe", "wins", "losses", "ties", "win rate [95% CI]"];
  return [el("p", { class: "muted" }, "win rates from the experiment report (this server has no "
    + "leaderboard route)"), table(head, rows)];
}

async function loadBoard() {
  const exp = currentExperiment();
  const box = $("bt-board");
  if (!exp) return box.replaceChildren();
  const name = encodeURIComponent(exp.name);
  try {
    box.replaceChildren(...leaderboardTable(await api(`v1/experiments/${name}/leaderboard`)));
  } catch (err) {
    if (err.status !== 404) return box.replaceChildren(el("div", { class: "msg error" }, err.message));
    try {
      box.replaceChildren(...reportTable(await api(`v1/experiments/${name}`)));
    } catch (err2) {
      box.replaceChildren(el("div", { class: "msg error" }, err2.message));
    }
  }
}

async function loadExperiments() {
  state.experiments = (await api("v1/experiments")).data;
  renderExperiments();
  await loadBoard();
}

function initBattle() {
  $("bt-go").addEventListener("click", startBattle);
  $("bt-refresh").addEventListener("click", loadExperiments);
  $("bt-exp").addEventListener("change", loadBoard);
  const votes = { "bt-vote-a": "a", "bt-vote-b": "b", "bt-vote-tie": "tie", "bt-vote-bad": "both_bad" };
  for (const [id, kind] of Object.entries(votes)) $(id).addEventListener("click", () => vote(kind));
}

// ------------------------------------------------------------------------------------- vectors

function kv(label, value) {
  if (value === null || value === undefined || value === "") return null;
  return el("div", { class: "kv" }, el("span", { class: "k" }, label), el("span", {}, String(value)));
}

function vectorCard(v) {
  const m = v.metadata || {};
  const extra = m.extra || {};
  const scores = Object.entries(m.eval_scores || {}).map(([k, x]) => `${k} ${fmt(x, 3)}`).join(" · ");
  return el("div", { class: "card", dataset: { vector: v.name } },
    el("h3", {}, `${v.name}@${v.version}`, el("span", { class: "tag" }, v.kind)),
    el("p", {}, cardLine(v)),
    kv("base", m.base_model), kv("extraction", m.method), kv("rank", m.rank),
    kv("size", `${(v.size_bytes / 1024).toFixed(1)} KiB`), kv("held-out scores", scores),
    kv("training pairs", extra.n_train), kv("data sha256", m.data_hash && `${m.data_hash.slice(0, 16)}…`),
    kv("file sha256", `${v.sha256.slice(0, 16)}…`), kv("created", v.created_at),
    el("details", {}, el("summary", {}, "all metadata"), el("pre", {}, JSON.stringify(m, null, 1))));
}

async function loadVectors() {
  state.vectors = (await api("v1/vectors")).data;
  $("vec-list").replaceChildren(...state.vectors.map(vectorCard));
  if (!state.vectors.length) $("vec-list").append(el("p", { class: "muted" }, "no vectors"));
  renderSliders();
}

function recipeCard(r) {
  const weights = Object.entries(r.weights).map(([k, w]) => `${k}=${w}`).join(", ");
  return el("div", { class: "card" }, el("h3", {}, `${r.name}@${r.version}`),
    el("p", {}, r.description || ""), kv("key", r.key), kv("weights", weights),
    kv("method", `${r.method} (density ${r.density})`));
}

async function loadRecipes() {
  state.recipes = (await api("v1/recipes")).data;
  $("recipe-list").replaceChildren(...state.recipes.map(recipeCard));
  renderSources();
}

async function upload(ev) {
  ev.preventDefault();
  const file = $("up-file").files[0];
  if (!file) return showMessage("up-msg", "choose a safetensors file first", "error");
  const form = new FormData();
  form.append("file", file, file.name);
  const meta = {};
  if ($("up-name").value.trim()) meta.name = $("up-name").value.trim();
  if ($("up-description").value.trim()) meta.description = $("up-description").value.trim();
  if (Object.keys(meta).length) form.append("metadata", JSON.stringify(meta));
  $("up-go").disabled = true;
  try {
    const v = await api("v1/vectors", { method: "POST", form });
    showMessage("up-msg", `stored ${v.name}@${v.version} (${v.kind}, sha256 ${v.sha256.slice(0, 12)}…)`);
    await loadVectors();
  } catch (err) {
    showError("up-msg", err);
  } finally {
    $("up-go").disabled = false;
  }
}

// ---------------------------------------------------------------------------------------- start

initKey();
initTabs();
initPlayground();
initSideBySide();
initBattle();
$("up-form").addEventListener("submit", upload);
refreshAll();
