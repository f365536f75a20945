"use strict";
// mockoai's live dashboard: snapshots arrive as server-sent events from
// <page>/events (read with fetch, which can send an Authorization header
// when the page's #key= asks for one; EventSource cannot), and are drawn on
// canvases.  Each chart element carries its state in data-* attributes
// (points, series, max, last) for tests and scripts.
(function () {
  const EVENTS = location.pathname.replace(/\/+$/, "") + "/events";
  const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                   "#b07aa1", "#ff9da7", "#9c755f", "#8cd17d"];
  const KINDS = {400: "invalid request", 401: "no or wrong key", 402: "payment required",
                 403: "forbidden", 404: "not found", 405: "method not allowed",
                 408: "slow headers", 413: "body too large", 414: "URL too long",
                 429: "rate limited", 431: "headers too large", 499: "client left",
                 500: "server error", 502: "bad gateway", 503: "overloaded or draining",
                 504: "queue timeout"};
  const MIN_SPAN = 60;
  const body = document.body;
  const $ = (id) => document.getElementById(id);
  let interval = 1, history = 300, retry = 2000;
  let firstT = null, lastT = 0, snapshots = 0;

  function fmt(v) {
    if (v == null || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    if (a >= 1) return v.toFixed(2);
    return a === 0 ? "0" : v.toPrecision(2);
  }
  const count = (v) => (v == null ? "–" : Math.round(v).toLocaleString("en-US"));
  const css = (name) => getComputedStyle(body).getPropertyValue(name).trim();

  // The step of four gridlines that hold v: 1, 2, 2.5 or 5 times a power of ten
  // (whole numbers only for counts), and the decimals its labels need.
  function niceStep(v, whole) {
    const raw = v > 0 ? v / 4 : 0.25;
    let k = Math.floor(Math.log10(raw));
    for (;;) {
      for (const m of whole ? [1, 2, 5] : [1, 2, 2.5, 5]) {
        const step = m * Math.pow(10, k);
        if (raw <= step * 1.0000001 && (!whole || step >= 1)) {
          return [step, Math.max(0, -k) + (m === 2.5 && k <= 0 ? 1 : 0)];
        }
      }
      k += 1;
    }
  }

  // Time ticks back from now: the first step that gives at most five.
  function timeStep(span) {
    for (const step of [5, 10, 15, 30, 60, 120, 300]) if (span / step <= 5) return step;
    return 600;
  }

  const clockTime = (t) => new Date(t * 1000).toLocaleTimeString(undefined, {hour12: false});

  class Chart {
    // fixed: [[key, label, color, dash]]; without it, series appear as keys do.
    // whole: the values are counts (gridlines on whole numbers).
    constructor(id, fixed, whole) {
      this.el = $(id);
      this.whole = Boolean(whole);
      this.canvas = this.el.querySelector("canvas");
      this.legend = this.el.querySelector(".legend");
      this.series = new Map();
      this.points = 0;
      this.fixed = Boolean(fixed);
      for (const [key, label, color, dash] of fixed || []) this.line(key, label, color, dash);
    }

    line(key, label, color, dash) {
      let s = this.series.get(key);
      if (!s) {
        s = {label: label || key, color: color || PALETTE[this.series.size % PALETTE.length],
             dash: dash || [], data: [], last: null};
        this.series.set(key, s);
      }
      return s;
    }

    // values: {key: number|null}; null values, or values == null, are gaps.
    // A series of a dynamic chart missing from values is 0 at t.
    add(t, values) {
      for (const key of Object.keys(values || {})) this.line(key);
      const cut = t - history * interval - 2 * interval;
      for (const [key, s] of this.series) {
        let v = values == null ? null : values[key];
        if (v === undefined) v = this.fixed ? null : 0;
        s.data.push([t, v]);
        s.last = v;
        let i = 0;
        while (i < s.data.length && s.data[i][0] < cut) i++;
        if (i) s.data.splice(0, i);
      }
      this.points++;
    }

    draw(now) {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth, h = c.clientHeight;
      if (!w || !h) return;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      const left = 46, right = 8, top = 6, bottom = 18;
      const pw = w - left - right, ph = h - top - bottom;
      const span = Math.min(history * interval, Math.max(MIN_SPAN, now - (firstT || now)));
      const t0 = now - span;
      let max = 0;
      for (const s of this.series.values()) {
        for (const [t, v] of s.data) if (t >= t0 && v != null && v > max) max = v;
      }
      const [step_, decimals] = niceStep(max, this.whole);
      const top_ = 4 * step_;
      const x = (t) => left + ((t - t0) / span) * pw;
      const y = (v) => top + ph - (v / top_) * ph;
      g.font = "11px system-ui, sans-serif";
      g.lineWidth = 1;
      g.strokeStyle = css("--grid");
      g.fillStyle = css("--muted");
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (let k = 0; k <= 4; k++) {
        const v = (top_ * k) / 4, yy = Math.round(y(v)) + 0.5;
        g.beginPath();
        g.moveTo(left, yy);
        g.lineTo(w - right, yy);
        g.stroke();
        g.fillText(v >= 1e4 ? fmt(v) : v.toFixed(decimals), left - 5, yy);
      }
      g.textAlign = "center";
      g.textBaseline = "top";
      const step = timeStep(span);
      for (let back = 0; back <= span + 1e-9; back += step) {
        const label = back === 0 ? "now" : "-" + (step >= 60 ? back / 60 + "m" : back + "s");
        g.fillText(label, Math.max(left + 10, Math.min(x(now - back), w - 14)), top + ph + 5);
      }
      g.save();
      g.beginPath();
      g.rect(left, top - 2, pw, ph + 4);
      g.clip();
      g.lineWidth = 1.6;
      g.lineJoin = "round";
      for (const s of this.series.values()) {
        g.strokeStyle = g.fillStyle = s.color;
        g.setLineDash(s.dash);
        g.beginPath();
        let pen = false, prev = -Infinity, alone = null;
        for (const [t, v] of s.data) {
          if (t - prev > 3 * interval) pen = false;
          prev = t;
          if (v == null) { pen = false; continue; }
          const px = x(t), py = y(v);
          if (pen) { g.lineTo(px, py); alone = null; } else { g.moveTo(px, py); pen = true; alone = [px, py]; }
        }
        g.stroke();
        if (alone) g.fillRect(alone[0] - 1.5, alone[1] - 1.5, 3, 3);
      }
      g.restore();
      const d = this.el.dataset;
      d.points = this.points;
      d.series = this.series.size;
      d.max = max;
      d.last = JSON.stringify(Object.fromEntries([...this.series].map(([k, s]) => [k, s.last])));
      this.drawLegend();
    }

    drawLegend() {
      const items = [];
      for (const s of this.series.values()) {
        const item = document.createElement("span");
        const swatch = document.createElement("i");
        swatch.style.background = s.color;
        const value = document.createElement("b");
        value.textContent = this.whole ? count(s.last) : fmt(s.last);
        item.append(swatch, s.label, value);
        items.push(item);
      }
      this.legend.replaceChildren(...items);
    }
  }

  const percentiles = [["p50", "p50", PALETTE[0]], ["p90", "p90", PALETTE[1]],
                       ["p99", "p99", PALETTE[3]]];
  const charts = {
    requests: new Chart("requests", [["all", "all", PALETTE[0]], ["errors", "errors", PALETTE[3]]]),
    tokens: new Chart("tokens", [["prompt", "prompt", PALETTE[4]],
                                 ["generation", "generation", PALETTE[2]]]),
    ttft: new Chart("ttft", percentiles),
    itl: new Chart("itl", percentiles),
    running: new Chart("running", null, true),
    queued: new Chart("queued", null, true),
    errors: new Chart("errors"),
  };

  function trio(values) {
    return values == null ? null : {p50: values[0], p90: values[1], p99: values[2]};
  }

  function point(p) {
    if (p.t <= lastT) return;  // already drawn (a reconnect's history repeats it)
    lastT = p.t;
    if (firstT == null) firstT = p.t;
    const t = p.t;
    let all = null, errors = null, byStatus = null;
    if (p.requests) {
      all = 0; errors = 0; byStatus = {};
      for (const [status, rate] of Object.entries(p.requests)) {
        all += rate;
        if (+status >= 400) { errors += rate; byStatus[status] = rate; }
      }
    }
    charts.requests.add(t, p.requests ? {all: all, errors: errors} : null);
    charts.errors.add(t, byStatus);
    charts.tokens.add(t, p.tokens ? {prompt: p.tokens[0], generation: p.tokens[1]} : null);
    charts.ttft.add(t, trio(p.ttft));
    charts.itl.add(t, trio(p.itl));
    const running = {}, queued = {};
    for (const [model, [r, q]] of Object.entries(p.models)) { running[model] = r; queued[model] = q; }
    charts.running.add(t, running);
    charts.queued.add(t, queued);
    $("workers").textContent = p.workers + (p.workers === 1 ? " worker" : " workers");
    $("clock").textContent = clockTime(t);
    body.dataset.workers = p.workers;
  }

  function totals(snapshot) {
    const tot = snapshot.totals;
    let errors = 0;
    for (const n of Object.values(tot.errors)) errors += n;
    let running = 0, queued = 0;
    for (const [r, q] of Object.values(snapshot.point.models)) { running += r; queued += q; }
    $("t-requests").textContent = count(tot.requests);
    $("t-errors").textContent = count(errors);
    $("t-prompt").textContent = count(tot.prompt_tokens);
    $("t-generation").textContent = count(tot.generation_tokens);
    $("t-running").textContent = count(running);
    $("t-queued").textContent = count(queued);
    body.dataset.requests = tot.requests;
    body.dataset.errors = errors;
    body.dataset.generationTokens = tot.generation_tokens;
    const rows = tot.kinds.map(([status, kind, n]) =>
      row([status, kind || KINDS[status] || "", [count(n), "n"]]));
    $("statuses").querySelector("tbody").replaceChildren(...rows);
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      const [text, cls] = Array.isArray(cell) ? cell : [cell, ""];
      td.textContent = text == null ? "" : text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    return tr;
  }

  function recent(entries) {
    const rows = entries.map(([at, endpoint, status, model, stream, ttft, e2e, prompt,
                               completion, error]) => row([
      clockTime(at) + "." +
        String(Math.floor((at % 1) * 1000)).padStart(3, "0"),
      endpoint, model, [status, status >= 400 ? "bad" : ""], stream ? "yes" : "",
      [ttft == null ? "" : fmt(ttft), "n"], [e2e == null ? "" : fmt(e2e), "n"],
      [prompt, "n"], [completion, "n"], error]));
    $("recent").querySelector("tbody").replaceChildren(...rows);
    body.dataset.rows = rows.length;
  }

  function draw() {
    for (const chart of Object.values(charts)) chart.draw(lastT);
  }

  function handle(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && +value > 0) retry = +value;
    }
    if (!data.length) return;
    const message = JSON.parse(data.join("\n"));
    if (event === "history") {
      interval = message.interval;
      history = Math.max(history, message.points.length);
      for (const p of message.points) point(p);
    } else if (event === "snapshot") {
      point(message.point);
      totals(message);
      recent(message.recent);
      body.dataset.snapshots = ++snapshots;
    }
    draw();
  }

  function state(name, text) {
    body.dataset.state = name;
    $("state").textContent = text || name;
  }

  async function connect() {
    const key = new URLSearchParams(location.hash.slice(1)).get("key");
    state("connecting");
    try {
      const response = await fetch(EVENTS, {
        headers: key ? {Authorization: "Bearer " + key} : {}, cache: "no-store"});
      if (response.status === 401) {
        state("key", "needs an API key");
        $("key").hidden = false;
        return;  // until the address gets a #key= (hashchange)
      }
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      $("key").hidden = true;
      state("live");
      const reader = response.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {done, value} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          handle(block);
        }
      }
    } catch (e) {
      // the server went away or refused: try again below
    }
    state("reconnecting");
    setTimeout(connect, retry);
  }

  window.addEventListener("hashchange", () => { if (body.dataset.state === "key") connect(); });
  window.addEventListener("resize", draw);
  connect();
})();
