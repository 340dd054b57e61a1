// The timers page: reads the JSON API with the user's key and draws what it answers.
// Every value from the API is put in the page as text (textContent), never as markup.
"use strict";

(() => {
  const KEY = "timers.apiKey"; // sessionStorage: this tab only, gone when it closes
  const REFRESH_MS = 5000;
  const WINDOW_MINUTES = 15;
  const STATUSES = ["pending", "executing", "completed", "failed", "canceled"];
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const NEXT = "/timers?status=pending&sort=execute_at&order=asc&limit=10";
  const FAILURES = "/timers?status=failed&sort=updated_at&order=desc&limit=10";
  const SCHEDULES = "/schedules?limit=20";
  const SEARCH_LIMIT = 50;
  const SVG = "http://www.w3.org/2000/svg";
  const HOW_TO_SEARCH = 'Enter a timer id (a UUID) or a metadata JSON object, such as {"tenant": "acme"}.';
  const HISTORY_COLUMNS = ["attempt", "started_at", "duration", "outcome", "HTTP status", "error"];

  const $ = (selector) => document.querySelector(selector);

  let flowerUrl = null; // from GET /stats; null when Flower is not configured
  let refreshTimer = null;
  let refreshRun = 0; // the latest refresh; an older one that answers late draws nothing
  let generation = 0; // bumped when the key changes, so late answers for an old key are dropped

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // GET a path of the API; resolves to the envelope's `data`, rejects with an ApiError.
  async function api(path) {
    let response;
    try {
      response = await fetch(path, {
        headers: { "X-API-Key": sessionStorage.getItem(KEY) || "", Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      throw new ApiError(0, `cannot reach the API (${error.message})`);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const message = body && typeof body.message === "string" ? body.message : null;
    if (!response.ok || !body) {
      throw new ApiError(response.status, message || `HTTP ${response.status}`);
    }
    return body.data;
  }

  // Elements. `children` are nodes or strings (strings become text nodes).
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === null || value === undefined) continue;
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attrs = {}, text = null) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== null) node.textContent = text;
    return node;
  }

  // Times in UTC, ISO 8601.
  function iso(value) {
    if (value === null || value === undefined) return "–";
    const ms = Date.parse(value);
    return Number.isNaN(ms) ? String(value) : new Date(ms).toISOString();
  }

  function count(n) {
    return typeof n === "number" ? n.toLocaleString("en-US") : "–";
  }

  function json(value) {
    return value === null || value === undefined ? "–" : JSON.stringify(value);
  }

  function clipped(text, max = 80) {
    const long = text.length > max;
    return el("span", { title: long ? text : null }, long ? `${text.slice(0, max - 1)}…` : text);
  }

  // Only http(s) URLs become links (a stored value must not turn into a `javascript:` link).
  function safeBase(url) {
    if (typeof url !== "string" || !url) return null;
    try {
      const parsed = new URL(url);
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return null;
    } catch {
      return null;
    }
    return url.replace(/\/+$/, "");
  }

  function flowerLink(timer) {
    if (!flowerUrl || timer.callback_type !== "celery") return null;
    const href = `${flowerUrl}/task/${encodeURIComponent(timer.id)}`;
    return el("a", { href, rel: "noreferrer", target: "_blank", className: "flower" }, "Flower");
  }

  // A timer id that opens the timer in the search section.
  function idButton(id) {
    const props = { type: "button", className: "timer-id", title: "Show this timer" };
    const button = el("button", props, String(id));
    button.addEventListener("click", () => {
      $("#search-input").value = String(id);
      search().then(() => $("#search").scrollIntoView({ block: "start" }));
    });
    return button;
  }

  // A table of timers; `columns` are [heading, (timer) => node or text].
  function timerTable(timers, columns, emptyText) {
    if (!timers.length) return el("p", { className: "hint empty" }, emptyText);
    const head = el("tr", {}, ...columns.map(([title]) => el("th", { scope: "col" }, title)));
    const rows = timers.map((timer) =>
      el(
        "tr",
        { "data-timer-id": timer.id },
        ...columns.map(([title, cell]) => el("td", { "data-column": title }, cell(timer) ?? "")),
      ),
    );
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
  }

  const COLUMN = {
    id: ["id", (t) => idButton(t.id)],
    status: ["status", (t) => el("span", { className: `status ${t.status}` }, t.status)],
    due: ["execute_at", (t) => iso(t.execute_at)],
    failedAt: ["failed at", (t) => iso(t.updated_at)],
    type: ["type", (t) => t.callback_type],
    attempts: ["attempts", (t) => String(t.delivery_attempts)],
    lastError: ["last_error", (t) => clipped(t.last_error || "–", 160)],
    metadata: ["metadata", (t) => clipped(json(t.metadata))],
    flower: ["", flowerLink],
  };

  // Schedules: name, cron or period, zone, state and next fire time (the first of the list's
  // `next_fire_times`; none while paused or ended).
  function renderSchedules(page) {
    const schedules = page.schedules || [];
    const list = $("#schedules .list");
    if (!schedules.length) {
      list.replaceChildren(el("p", { className: "hint empty" }, "No schedules."));
      return;
    }
    const columns = [
      ["name", (s) => s.name || "–"],
      ["when", (s) => (s.cron ? s.cron : `every ${s.every} s`)],
      ["zone", (s) => s.timezone],
      ["state", (s) => el("span", { className: `status ${s.state}` }, s.state)],
      ["next fire", (s) => (s.next_fire_times?.length ? iso(s.next_fire_times[0]) : "–")],
    ];
    const head = el("tr", {}, ...columns.map(([title]) => el("th", { scope: "col" }, title)));
    const rows = schedules.map((s) =>
      el(
        "tr",
        { "data-schedule-id": s.id },
        ...columns.map(([title, cell]) => el("td", { "data-column": title }, cell(s))),
      ),
    );
    list.replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
  }

  function renderStats(stats) {
    const approx = Boolean(stats.counts_estimated);
    for (const status of STATUSES) {
      const cell = document.querySelector(`#counts td[data-status="${status}"]`);
      const n = stats.counts ? stats.counts[status] : undefined;
      cell.textContent = `${approx && typeof n === "number" ? "≈ " : ""}${count(n)}`;
    }
    $("#counts-estimated").hidden = !approx;
    $("#backlog-count").textContent = count(stats.due_backlog);
    flowerUrl = safeBase(stats.flower_url);
    const link = $("#flower-link");
    if (flowerUrl) link.setAttribute("href", `${flowerUrl}/tasks`);
    else link.removeAttribute("href");
    link.hidden = !flowerUrl;
    drawLateness(Array.isArray(stats.lateness) ? stats.lateness : []);
  }

  function renderList(section, timers, columns, emptyText) {
    $(`${section} .list`).replaceChildren(timerTable(timers, columns, emptyText));
  }

  // Lateness chart: p50 and p99 per minute over the last WINDOW_MINUTES, as inline SVG.
  function niceCeiling(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function ms(value) {
    if (value < 10 && !Number.isInteger(value)) return value.toFixed(1);
    return Math.round(value).toLocaleString("en-US");
  }

  function hhmm(time) {
    return `${new Date(time).toISOString().slice(11, 16)}Z`;
  }

  function drawLateness(points) {
    const box = $("#lateness-chart");
    const end = Math.max(
      Math.floor(Date.now() / 60000) * 60000,
      ...points.map((p) => Date.parse(p.minute)).filter((t) => !Number.isNaN(t)),
    );
    const start = end - (WINDOW_MINUTES - 1) * 60000;
    const data = points
      .map((p) => ({ ...p, at: Date.parse(p.minute) }))
      .filter((p) => p.at >= start && p.count > 0)
      .filter((p) => Number.isFinite(p.p50_ms) && Number.isFinite(p.p99_ms));
    $("#lateness-empty").hidden = data.length > 0;
    $("#lateness-legend").hidden = data.length === 0;
    if (!data.length) {
      box.replaceChildren();
      return;
    }
    const [width, height, left, right, top, bottom] = [480, 160, 52, 10, 10, 22];
    const ceiling = niceCeiling(Math.max(1, ...data.map((p) => Math.max(p.p50_ms, p.p99_ms))));
    const x = (t) => left + ((t - start) / (end - start)) * (width - left - right);
    const y = (v) => top + (1 - v / ceiling) * (height - top - bottom);
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": `Lateness per minute, p50 and p99, ${hhmm(start)} to ${hhmm(end)}`,
    });
    const label = (x_, y_, text, anchor = "start") =>
      svg("text", { x: x_, y: y_, "text-anchor": anchor, class: "axis" }, text);
    for (const v of [0, ceiling / 2, ceiling]) {
      chart.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
      chart.append(label(left - 6, y(v) + 4, `${ms(v)} ms`, "end"));
    }
    chart.append(label(left, height - 6, hhmm(start)));
    chart.append(label(width - right, height - 6, hhmm(end), "end"));
    for (const series of ["p99", "p50"]) {
      const key = `${series}_ms`;
      const line = data.map((p) => `${x(p.at).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
      chart.append(svg("polyline", { points: line, class: `line ${series}` }));
      for (const p of data) {
        const dot = svg("circle", { cx: x(p.at), cy: y(p[key]), r: 3, class: `dot ${series}` });
        const max = Number.isFinite(p.max_ms) ? `, max ${ms(p.max_ms)} ms` : "";
        const what = `p50 ${ms(p.p50_ms)} ms, p99 ${ms(p.p99_ms)} ms${max}`;
        dot.append(svg("title", {}, `${hhmm(p.at)}: ${count(p.count)} deliveries, ${what}`));
        chart.append(dot);
      }
    }
    box.replaceChildren(chart);
  }

  // Refresh: counts, backlog, chart and both lists, every REFRESH_MS while a key is set.
  async function refresh() {
    clearTimeout(refreshTimer);
    const run = ++refreshRun;
    if (!sessionStorage.getItem(KEY)) return;
    if (document.hidden) {
      refreshTimer = setTimeout(refresh, REFRESH_MS);
      return;
    }
    const { id, due, failedAt, type, attempts, lastError, metadata, flower } = COLUMN;
    const parts = [
      ["GET /stats", api("/stats"), renderStats],
      [
        "next to fire",
        api(NEXT),
        (d) => renderList("#next", d.timers, [id, due, type, metadata, flower], "No pending timers."),
      ],
      ["schedules", api(SCHEDULES), renderSchedules],
      [
        "recent failures",
        api(FAILURES),
        (d) =>
          renderList(
            "#failures",
            d.timers,
            [id, failedAt, type, attempts, lastError, flower],
            "No failed timers.",
          ),
      ],
    ];
    const results = await Promise.allSettled(parts.map(([, promise]) => promise));
    if (run !== refreshRun) return; // the key changed, or a newer refresh started
    const problems = [];
    for (const [i, result] of results.entries()) {
      const [name, , render] = parts[i];
      if (result.status === "rejected") {
        if (result.reason instanceof ApiError && result.reason.status === 401) {
          askForKey(`The API key was refused (${result.reason.message}). Enter a valid key.`);
          return;
        }
        problems.push(`${name}: ${result.reason.message}`);
      } else {
        render(result.value);
      }
    }
    if (problems.length) showNotice(`Could not refresh everything. ${problems.join("; ")}`);
    else hideNotice();
    if (problems.length < parts.length) {
      const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
      $("#updated").textContent = `updated at ${now}`;
    }
    refreshTimer = setTimeout(refresh, REFRESH_MS);
  }

  // Search: a timer id shows that timer and its history; a JSON object lists timers whose
  // metadata contains it.
  async function search() {
    const query = $("#search-input").value.trim();
    const out = $("#search-results");
    const run = generation;
    if (!query) {
      out.replaceChildren();
      return;
    }
    const show = (...nodes) => {
      if (run === generation) out.replaceChildren(...nodes);
    };
    try {
      if (UUID.test(query)) {
        show(timerDetail(await api(`/timers/${encodeURIComponent(query.toLowerCase())}`)));
        return;
      }
      let metadata;
      try {
        metadata = JSON.parse(query);
      } catch {
        metadata = undefined;
      }
      if (metadata === null || typeof metadata !== "object" || Array.isArray(metadata)) {
        show(el("p", { className: "hint" }, HOW_TO_SEARCH));
        return;
      }
      const params = new URLSearchParams({
        metadata: JSON.stringify(metadata),
        sort: "created_at",
        order: "desc",
        limit: String(SEARCH_LIMIT),
      });
      const page = await api(`/timers?${params}`);
      const n = page.timers.length;
      const more = page.next_cursor ? ` (the newest ${SEARCH_LIMIT})` : "";
      const wanted = JSON.stringify(metadata);
      const summary = `${n} timer${n === 1 ? "" : "s"} whose metadata contains ${wanted}${more}`;
      const { id, status, due, type, lastError, flower } = COLUMN;
      const columns = [id, status, due, type, COLUMN.metadata, lastError, flower];
      show(
        el("p", { className: "summary" }, summary),
        timerTable(page.timers, columns, "No timer matches."),
      );
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        askForKey(`The API key was refused (${error.message}). Enter a valid key.`);
      } else if (error instanceof ApiError && error.status === 404) {
        show(el("p", { className: "hint" }, `No timer with id ${query}.`));
      } else {
        show(el("p", { className: "error" }, `Search failed: ${error.message}`));
      }
    }
  }

  function timerDetail(timer) {
    const fields = [
      ["id", timer.id],
      ["status", timer.status],
      ["callback_type", timer.callback_type],
      ["execute_at", iso(timer.execute_at)],
      ["created_at", iso(timer.created_at)],
      ["updated_at", iso(timer.updated_at)],
      ["executed_at", iso(timer.executed_at)],
      ["next_attempt_at", iso(timer.next_attempt_at)],
      ["claims", String(timer.claims)],
      ["delivery_attempts", String(timer.delivery_attempts)],
      ["last_error", timer.last_error || "–"],
      ["metadata", json(timer.metadata)],
      ["retry", json(timer.retry)],
    ];
    const pairs = fields.flatMap(([name, value]) => [
      el("dt", {}, name),
      el("dd", { "data-field": name }, value),
    ]);
    const list = el("dl", {}, ...pairs);
    const link = flowerLink(timer);
    const history = Array.isArray(timer.history) ? timer.history : [];
    const attempts = history.length
      ? el(
          "table",
          { className: "history" },
          el("thead", {}, el("tr", {}, ...HISTORY_COLUMNS.map((h) => el("th", { scope: "col" }, h)))),
          el(
            "tbody",
            {},
            ...history.map((a) =>
              el(
                "tr",
                {},
                el("td", {}, String(a.attempt)),
                el("td", {}, iso(a.started_at)),
                el("td", {}, `${count(a.duration_ms)} ms`),
                el("td", {}, el("span", { className: `status ${a.outcome}` }, a.outcome)),
                el("td", {}, a.status === null || a.status === undefined ? "–" : String(a.status)),
                el("td", {}, a.error || "–"),
              ),
            ),
          ),
        )
      : el("p", { className: "hint empty" }, "No attempts yet.");
    return el(
      "article",
      { className: "timer", "data-timer-id": timer.id },
      list,
      el("h3", {}, "callback_config"),
      el("pre", {}, JSON.stringify(timer.callback_config, null, 2)),
      el("h3", {}, "History"),
      attempts,
      link ? el("p", {}, link) : null,
    );
  }

  // The key form, the notice line and switching between them and the dashboard.
  function showNotice(text) {
    const notice = $("#notice");
    notice.textContent = text;
    notice.hidden = false;
  }

  function hideNotice() {
    $("#notice").hidden = true;
  }

  function clearDashboard() {
    for (const cell of document.querySelectorAll("#counts td[data-status]")) cell.textContent = "–";
    $("#backlog-count").textContent = "–";
    $("#lateness-chart").replaceChildren();
    $("#lateness-legend").hidden = true;
    for (const list of document.querySelectorAll("#dashboard .list")) list.replaceChildren();
    $("#search-results").replaceChildren();
    $("#updated").textContent = "";
    $("#flower-link").hidden = true;
    flowerUrl = null;
  }

  function askForKey(message) {
    generation += 1;
    refreshRun += 1;
    clearTimeout(refreshTimer);
    sessionStorage.removeItem(KEY);
    clearDashboard();
    $("#dashboard").hidden = true;
    $("#forget-key").hidden = true;
    $("#key").hidden = false;
    if (message) showNotice(message);
    else hideNotice();
    $("#key-input").focus();
  }

  function open() {
    generation += 1;
    hideNotice();
    $("#key").hidden = true;
    $("#dashboard").hidden = false;
    $("#forget-key").hidden = false;
    refresh();
  }

  function start() {
    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("#key-input");
      const key = input.value.trim();
      input.value = "";
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      open();
    });
    $("#forget-key").addEventListener("click", () => askForKey(null));
    $("#search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      search();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && sessionStorage.getItem(KEY)) refresh();
    });
    if (sessionStorage.getItem(KEY)) open();
    else askForKey(null);
  }

  start();
})();
