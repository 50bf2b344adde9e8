// The dashboard: an overview, the jobs (filtered and paged on the server, held in the URL), a
// job with its next fires and its ledger, and forms to create and change jobs. Everything comes
// from the public REST API and the event stream; pages update live from the stream.

import { ApiError, call, get, onAuthChange, post, refusal, role, setToken, token, tokenNeeded } from "./api.js";
import { describeSchedule } from "./cron.js";
import { follow } from "./stream.js";

const STATUSES = ["PENDING", "SCHEDULED", "RUNNING", "SUCCEEDED", "FAILED", "PAUSED", "CANCELLED"];
const main = document.getElementById("main");
const notice = document.getElementById("notice");
let cleanup = () => {};

// ---------- small helpers ----------

/** An element: `h("a", {href: "#/"}, "text", child)`; text is never parsed as HTML. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function say(text, failed = false) {
  notice.textContent = text;
  notice.className = failed ? "failed" : "";
}

function statusCell(status) {
  return h("span", { class: `status status-${status}` }, status);
}

function whenText(value) {
  return value || "—";
}

/** Milliseconds between two RFC 3339 times, or null. */
function lagMs(from, to) {
  if (!from || !to) return null;
  return Date.parse(to) - Date.parse(from);
}

function params(query) {
  return new URLSearchParams(query || "");
}

// ---------- the token ----------

const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token-input");
document.getElementById("token-button").addEventListener("click", () => {
  tokenForm.hidden = !tokenForm.hidden;
  if (!tokenForm.hidden) tokenInput.focus();
});
tokenForm.addEventListener("submit", (e) => {
  e.preventDefault();
  setToken(tokenInput.value.trim());
  tokenInput.value = "";
  tokenForm.hidden = true;
  render();
});
document.getElementById("token-clear").addEventListener("click", () => {
  setToken(null);
  render();
});

function showWho() {
  const who = document.getElementById("who");
  const r = role();
  who.textContent = token() ? `signed in as ${r}` : tokenNeeded() ? "a token is needed" : "";
  if (tokenNeeded() && !token()) tokenForm.hidden = false;
}
onAuthChange(showWho);

/** A button that acts, enabled only when allowed, its reason shown when not. */
function actionButton(label, { needs, why, onclick, danger = false }) {
  const refused = refusal(needs) || why || null;
  const button = h(
    "button",
    { type: "button", class: danger ? "danger" : null, disabled: Boolean(refused), onclick },
    label,
  );
  if (!refused) return button;
  const id = `why-${label.toLowerCase().replace(/\W+/g, "-")}`;
  button.setAttribute("aria-describedby", id);
  return h("span", {}, button, " ", h("span", { id, class: "why" }, `(${refused})`));
}

// ---------- overview ----------

async function overview() {
  main.replaceChildren(
    h("h1", {}, "Overview"),
    h("h2", {}, "Jobs by status"),
    h("div", { class: "cards", id: "counts" }, "Loading…"),
    h("h2", {}, "Fires, the last hour and the next"),
    h("div", { id: "chart" }),
    h("h2", {}, "Fire lag of recent runs"),
    h("p", { id: "lag" }, "No runs yet."),
    h("h2", {}, "Recent failures, timeouts and misses"),
    h("div", { id: "failures" }, h("p", {}, "None.")),
    h("p", { class: "live", id: "live" }),
  );
  const counts = async () => {
    const all = await get("/api/v1/jobs?size=1");
    const each = await Promise.all(
      STATUSES.map((s) => get(`/api/v1/jobs?status=${s}&size=1`).then((p) => [s, p.totalCount])),
    );
    document.getElementById("counts").replaceChildren(
      h("div", { class: "card" }, h("span", { class: "count" }, all.totalCount), "all jobs"),
      ...each.map(([s, n]) =>
        h("div", { class: "card" }, h("span", { class: "count" }, n),
          h("a", { href: `#/jobs?status=${s}` }, s.toLowerCase()))),
    );
  };
  const now = Date.now();
  const past = new Array(12).fill(0);
  const next = new Array(12).fill(0);
  const lags = [];
  const failures = [];
  const draw = () => {
    document.getElementById("chart").replaceChildren(chart(past, next));
    if (lags.length) {
      const sorted = [...lags].sort((a, b) => a - b);
      const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
      document.getElementById("lag").textContent =
        `${lags.length} runs: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${sorted[sorted.length - 1]} ms`;
    }
    if (failures.length) {
      document.getElementById("failures").replaceChildren(table(
        ["Job", "Status", "Due", "Why"],
        failures.slice(-20).reverse().map((f) => [
          h("a", { href: `#/jobs/${f.jobId}` }, f.name), statusCell(f.status), f.scheduledFor, f.error || "",
        ]),
      ));
    }
  };
  try {
    await counts();
    const soon = new Date(now + 3600e3).toISOString();
    const due = await get(`/api/v1/jobs?dueBefore=${encodeURIComponent(soon)}&size=100`);
    const recurring = [];
    for (const job of due.jobs) {
      const at = Date.parse(job.scheduleTime || "");
      if (at >= now && at < now + 3600e3) next[Math.floor((at - now) / 300e3)]++;
      if (job.schedule.cron || job.schedule.intervalSeconds) recurring.push(job);
    }
    // A recurring job may fire more than once within the hour: its later fires, from the preview.
    for (const job of recurring.slice(0, 10)) {
      const preview = await get(`/api/v1/schedule/preview?${previewQuery(job.schedule, 100)}`);
      for (const fire of preview.times.slice(1)) {
        const at = Date.parse(fire.time);
        if (at >= now && at < now + 3600e3) next[Math.floor((at - now) / 300e3)]++;
      }
    }
  } catch (error) {
    say(error.message, true);
  }
  draw();
  let refresh = null;
  const stop = follow({
    since: 0,
    onEvent: (type, event) => {
      const run = event.run;
      if (type === "scheduler.job.run" && run?.firedAt) {
        const at = Date.parse(run.firedAt);
        const slot = Math.floor((Date.now() - at) / 300e3);
        if (slot >= 0 && slot < 12) past[11 - slot]++;
        const lag = lagMs(run.scheduledFor, run.firedAt);
        if (lag !== null) lags.push(lag);
      }
      if (type === "scheduler.job.finished" && ["FAILED", "TIMED_OUT", "MISSED"].includes(run?.status)) {
        failures.push({ jobId: event.jobId, name: event.job?.name || event.jobId, ...run });
      }
      clearTimeout(refresh);
      refresh = setTimeout(() => {
        draw();
        counts().catch(() => {});
      }, 300);
    },
    onState: (text) => { document.getElementById("live").textContent = `Events: ${text}`; },
  });
  return stop;
}

/** Bars of fires per five minutes: the last hour, then the next. */
function chart(past, next) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const max = Math.max(1, ...past, ...next);
  svg.setAttribute("viewBox", "0 0 480 130");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  const total = (xs) => xs.reduce((a, b) => a + b, 0);
  svg.setAttribute("aria-label",
    `Fires per five minutes: ${total(past)} in the last hour, ${total(next)} due in the next`);
  const bars = [...past.map((n) => [n, "past"]), ...next.map((n) => [n, "next"])];
  bars.forEach(([n, kind], i) => {
    const height = Math.round((n / max) * 100);
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", String(i * 20 + 2));
    rect.setAttribute("y", String(105 - height));
    rect.setAttribute("width", "16");
    rect.setAttribute("height", String(height));
    rect.setAttribute("class", kind);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${n} fire${n === 1 ? "" : "s"}`;
    rect.append(title);
    svg.append(rect);
  });
  for (const [x, anchor, label] of [[2, "start", "−60 min"], [240, "middle", "now"], [478, "end", "+60 min"]]) {
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", String(x));
    text.setAttribute("y", "122");
    text.setAttribute("text-anchor", anchor);
    text.textContent = label;
    svg.append(text);
  }
  return svg;
}

function table(headings, rows, caption) {
  return h("div", { class: "table-wrap" },
    h("table", {},
      caption ? h("caption", { class: "why" }, caption) : null,
      h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}

// ---------- the jobs ----------

async function jobs(query) {
  const q = params(query);
  const page = Number(q.get("page") || 1);
  const filters = h("form", { class: "filters", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(e.target)) if (v) next.set(k, v);
    location.hash = `#/jobs?${next}`;
  } },
    h("div", { class: "field" }, h("label", { for: "f-status" }, "Status"),
      h("select", { id: "f-status", name: "status" }, h("option", { value: "" }, "any"),
        STATUSES.map((s) => h("option", { value: s, selected: q.get("status") === s }, s)))),
    h("div", { class: "field" }, h("label", { for: "f-type" }, "Type"),
      h("select", { id: "f-type", name: "jobType" }, h("option", { value: "" }, "any"),
        ["EMAIL", "SMS"].map((t) => h("option", { value: t, selected: q.get("jobType") === t }, t)))),
    h("div", { class: "field" }, h("label", { for: "f-name" }, "Name starts with"),
      h("input", { id: "f-name", name: "name", value: q.get("name") || "" })),
    h("div", { class: "field" }, h("label", { for: "f-size" }, "Per page"),
      h("select", { id: "f-size", name: "size" },
        ["20", "50", "100"].map((n) => h("option", { value: n, selected: (q.get("size") || "20") === n }, n)))),
    h("button", { type: "submit" }, "Filter"),
  );
  main.replaceChildren(h("h1", {}, "Jobs"), filters, h("div", { id: "list" }, "Loading…"),
    h("p", { class: "live", id: "live" }));
  const api = new URLSearchParams();
  for (const k of ["status", "jobType", "name", "size"]) if (q.get(k)) api.set(k, q.get(k));
  api.set("page", String(page));
  let answer;
  try {
    answer = await get(`/api/v1/jobs?${api}`);
  } catch (error) {
    document.getElementById("list").textContent = error.message;
    return () => {};
  }
  const rows = new Map();
  const list = answer.jobs.map((job) => {
    const status = statusCell(job.status);
    const next = h("span", {}, whenText(job.scheduleTime));
    rows.set(job.id, { status, next, version: job.version });
    return [h("a", { href: `#/jobs/${job.id}` }, job.name), job.jobType, status,
      describeSchedule(job.schedule), next];
  });
  const pageLink = (n, label) => {
    const to = new URLSearchParams(q);
    to.set("page", String(n));
    return h("a", { href: `#/jobs?${to}` }, label);
  };
  document.getElementById("list").replaceChildren(
    answer.jobs.length
      ? table(["Name", "Type", "Status", "Schedule", "Next fire"], list,
        `${answer.totalCount} jobs, page ${answer.page} of ${Math.max(1, answer.totalPages)}`)
      : h("p", {}, "No jobs match."),
    h("nav", { class: "pager", "aria-label": "Pages of jobs" },
      page > 1 ? pageLink(page - 1, "Previous page") : null,
      h("span", {}, `Page ${answer.page} of ${Math.max(1, answer.totalPages)}`),
      answer.hasMore ? pageLink(page + 1, "Next page") : null),
  );
  return follow({
    onEvent: (type, event) => {
      const row = rows.get(event.jobId);
      if (!row) return;
      if (type === "scheduler.job.deleted") {
        row.status.replaceWith(statusCell("DELETED"));
        return;
      }
      if (event.job.version < row.version) return;
      row.version = event.job.version;
      const fresh = statusCell(event.job.status);
      row.status.replaceWith(fresh);
      row.status = fresh;
      row.next.textContent = whenText(event.job.scheduleTime);
    },
    onGap: () => render(),
    onState: (text) => { document.getElementById("live").textContent = `Events: ${text}`; },
  });
}

// ---------- one job ----------

/** The preview query of a schedule as the API shows it. */
function previewQuery(schedule, count = 10, from = null) {
  const q = new URLSearchParams();
  for (const k of ["runAt", "cron", "timezone", "intervalSeconds", "startAt"]) {
    if (schedule[k] !== undefined && schedule[k] !== null && schedule[k] !== "") q.set(k, schedule[k]);
  }
  q.set("count", String(count));
  if (from) q.set("from", from);
  return q;
}

function fireList(times) {
  return h("ol", { class: "fires" }, times.map((fire) =>
    h("li", {}, `${fire.localTime} (${fire.time})`,
      fire.dst === "SKIPPED"
        ? [" ", h("span", { class: "badge" }, `DST: moved from ${fire.requestedLocalTime}, which does not exist`)]
        : fire.dst === "REPEATED"
          ? [" ", h("span", { class: "badge" }, "DST: this local time occurs twice; fires at the first")]
          : null)));
}

function allowed(job) {
  const ended = ["CANCELLED", "SUCCEEDED", "FAILED"].includes(job.status);
  return {
    pause: ["PENDING", "SCHEDULED", "RUNNING"].includes(job.status) ? null : `not while ${job.status}`,
    resume: job.status === "PAUSED" ? null : "only a paused job",
    trigger: job.status === "CANCELLED" ? "not while CANCELLED"
      : job.status === "RUNNING" && job.overlapPolicy === "SKIP" ? "a run is open and its overlap policy is SKIP"
      : null,
    cancel: ended ? `not while ${job.status}` : null,
  };
}

async function jobPage(id) {
  main.replaceChildren(h("p", {}, "Loading…"));
  let job;
  try {
    job = await get(`/api/v1/jobs/${id}`);
  } catch (error) {
    main.replaceChildren(h("h1", {}, "Job"), h("p", {}, error.message));
    return () => {};
  }
  const head = h("div", {});
  const ledger = h("div", {}, "Loading…");
  const fires = h("div", {}, "Loading…");
  const confirm = h("div", { id: "confirm" });
  main.replaceChildren(head, h("h2", {}, "Next fires"), fires, h("h2", {}, "Runs, newest first"),
    ledger, confirm, h("p", { class: "live", id: "live" }));

  const act = (name) => async () => {
    try {
      job = await post(`/api/v1/jobs/${id}/${name}`);
      say(`${job.name}: ${name} done; it is ${job.status}.`);
      show();
      loadRuns();
    } catch (error) {
      say(`${name}: ${error.message}`, true);
    }
  };
  const askDelete = () => {
    confirm.replaceChildren(
      h("p", { role: "alert" }, `Delete “${job.name}” and its runs? A pending fire never happens.`),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "danger", onclick: async () => {
          try {
            await call("DELETE", `/api/v1/jobs/${id}`);
            say(`${job.name} was deleted.`);
            location.hash = "#/jobs";
          } catch (error) {
            say(`delete: ${error.message}`, true);
          }
        } }, "Yes, delete it"),
        h("button", { type: "button", class: "quiet", onclick: () => confirm.replaceChildren() }, "Keep it")),
    );
    confirm.querySelector("button").focus();
  };

  function show() {
    const may = allowed(job);
    const data = JSON.stringify(job.jobData, null, 2);
    head.replaceChildren(
      h("h1", {}, job.name),
      h("div", { class: "actions", role: "group", "aria-label": "Actions" },
        actionButton("Pause", { needs: "operator", why: may.pause, onclick: act("pause") }),
        actionButton("Resume", { needs: "operator", why: may.resume, onclick: act("resume") }),
        actionButton("Trigger", { needs: "operator", why: may.trigger, onclick: act("trigger") }),
        actionButton("Cancel", { needs: "operator", why: may.cancel, onclick: act("cancel") }),
        actionButton("Edit", { needs: "admin", onclick: () => { location.hash = `#/jobs/${id}/edit`; } }),
        actionButton("Delete", { needs: "admin", danger: true, onclick: askDelete })),
      h("dl", { class: "fields" },
        h("dt", {}, "Status"), h("dd", { id: "job-status" }, statusCell(job.status)),
        h("dt", {}, "Schedule"), h("dd", {}, describeSchedule(job.schedule)),
        h("dt", {}, "Next fire"), h("dd", {}, whenText(job.scheduleTime)),
        h("dt", {}, "Type"), h("dd", {}, job.jobType),
        h("dt", {}, "Description"), h("dd", {}, job.description || "—"),
        h("dt", {}, "Retries"), h("dd", {}, `${job.retry.maxAttempts} attempt${job.retry.maxAttempts === 1 ? "" : "s"}, first retry after ${job.retry.backoffSeconds} s`),
        h("dt", {}, "Run timeout"), h("dd", {}, `${job.runTimeoutSeconds} s`),
        h("dt", {}, "Misfire policy"), h("dd", {}, job.misfirePolicy),
        h("dt", {}, "Overlap policy"), h("dd", {}, job.overlapPolicy),
        h("dt", {}, "Delivery"), h("dd", {}, job.delivery || (job.webhook ? "webhook (its own)" : "by default")),
        job.webhook ? [h("dt", {}, "Webhook"), h("dd", {}, `${job.webhook.url}${job.webhook.signed ? " (signed)" : ""}`)] : null,
        h("dt", {}, "Created"), h("dd", {}, `${job.createdAt}${job.createdBy ? ` by ${job.createdBy}` : ""}`),
        h("dt", {}, "Changed"), h("dd", {}, `${job.updatedAt}${job.updatedBy ? ` by ${job.updatedBy}` : ""}`),
        h("dt", {}, "Version"), h("dd", {}, job.version),
        h("dt", {}, "Id"), h("dd", {}, job.id),
        h("dt", {}, "Data"), h("dd", {}, h("pre", {}, data))),
    );
  }

  async function loadRuns() {
    try {
      const runs = await get(`/api/v1/jobs/${id}/runs?size=100`);
      ledger.replaceChildren(runs.runs.length
        ? table(["Due", "Attempt", "Status", "Fired", "Lag", "Finished", "Error or reason", "Output"],
          runs.runs.map((r) => {
            const lag = lagMs(r.scheduledFor, r.firedAt);
            return [r.scheduledFor, r.attempt, statusCell(r.status), whenText(r.firedAt),
              lag === null ? "—" : `${lag} ms`, whenText(r.finishedAt),
              [r.error || "", r.reason ? ` (${r.actor ? `${r.actor}: ` : ""}${r.reason})` : ""].join(""),
              r.output || ""];
          }))
        : h("p", {}, "No runs yet."));
    } catch (error) {
      ledger.textContent = error.message;
    }
  }

  async function loadFires() {
    try {
      const preview = await get(`/api/v1/schedule/preview?${previewQuery(job.schedule, 10, new Date().toISOString())}`);
      fires.replaceChildren(preview.times.length ? fireList(preview.times) : h("p", {}, "None."));
    } catch (error) {
      fires.textContent = error.message;
    }
  }

  show();
  loadRuns();
  loadFires();
  return follow({
    query: `jobId=${id}`,
    onEvent: (type, event) => {
      if (type === "scheduler.job.deleted") {
        say(`${job.name} was deleted.`);
        return;
      }
      if (event.job && event.job.version >= job.version) {
        job = event.job;
        show();
      }
      loadRuns();
    },
    onGap: () => render(),
    onState: (text) => { document.getElementById("live").textContent = `Events: ${text}`; },
  });
}

// ---------- the job form ----------

function field(path, label, input, hint) {
  const id = `in-${path.replace(/\W+/g, "-")}`;
  input.id = id;
  input.name = path;
  input.dataset.field = path;
  const error = h("div", { class: "error", id: `${id}-error` });
  if (hint) {
    const hintId = `${id}-hint`;
    input.setAttribute("aria-describedby", `${hintId} ${id}-error`);
    return h("div", { class: "field" }, h("label", { for: id }, label), input,
      h("div", { class: "hint", id: hintId }, hint), error);
  }
  input.setAttribute("aria-describedby", `${id}-error`);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, error);
}

const select = (options, value) =>
  h("select", {}, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));

function jobForm(job) {
  const editing = Boolean(job);
  const s = job?.schedule || {};
  const kind = s.cron ? "cron" : s.intervalSeconds ? "interval" : "runAt";
  const emailTemplate = { SourceAddress: "reports@example.com", DestinationAddress: "team@example.com",
    Subject: "Weekly report", Message: "The report is attached." };
  const form = h("form", { novalidate: true });
  const general = h("div", { class: "error", role: "alert" });
  const kindInputs = ["runAt", "cron", "interval"].map((k) =>
    h("label", { class: "choice" },
      h("input", { type: "radio", name: "kind", value: k, checked: k === kind }), " ",
      { runAt: "once", cron: "cron", interval: "every n seconds" }[k]));
  const preview = h("div", { "aria-live": "polite", id: "preview" });
  const previewFrom = h("input", { type: "date" });
  form.append(
    general,
    field("name", "Name", h("input", { value: job?.name || "", required: true }), "3 to 250 characters"),
    field("description", "Description", h("input", { value: job?.description || "" })),
    field("jobType", "Type", select([["EMAIL", "EMAIL"], ["SMS", "SMS"]], job?.jobType || "EMAIL")),
    field("jobData", "Data (JSON)", h("textarea", {}, JSON.stringify(job?.jobData || emailTemplate, null, 2)),
      "EMAIL jobs need SourceAddress, DestinationAddress, Subject and Message"),
    h("fieldset", { "data-field": "schedule" },
      h("legend", {}, "Schedule"),
      h("div", { role: "radiogroup", "aria-label": "Kind of schedule" }, kindInputs),
      h("div", { class: "row" },
        field("schedule.runAt", "Once at (RFC 3339)", h("input", { value: s.runAt || new Date(Date.now() + 3600e3).toISOString() })),
        field("schedule.cron", "Cron", h("input", { value: s.cron || "0 9 * * MON", spellcheck: "false" }),
          "5 fields (or 6, seconds first)"),
        field("schedule.timezone", "Time zone", h("input", { value: s.timezone || "Europe/Berlin" })),
        field("schedule.intervalSeconds", "Every (seconds)", h("input", { type: "number", min: "1", value: s.intervalSeconds || 3600 })),
        field("schedule.startAt", "Starting at (RFC 3339, optional)", h("input", { value: s.startAt || "" }))),
      h("div", { class: "field" }, h("label", { for: "preview-from" }, "Preview fires from (optional)"),
        Object.assign(previewFrom, { id: "preview-from" })),
      h("h3", {}, "Next fire times"),
      preview),
    h("fieldset", {},
      h("legend", {}, "Policies"),
      h("div", { class: "row" },
        field("retry.maxAttempts", "Attempts", h("input", { type: "number", min: "1", max: "100", value: job?.retry?.maxAttempts ?? 1 })),
        field("retry.backoffSeconds", "First retry after (s)", h("input", { type: "number", min: "0", value: job?.retry?.backoffSeconds ?? 10 })),
        field("runTimeoutSeconds", "Run timeout (s)", h("input", { type: "number", min: "1", value: job?.runTimeoutSeconds ?? 300 })),
        field("misfirePolicy", "Misfire policy", select([["FIRE_ONCE", "FIRE_ONCE"], ["SKIP", "SKIP"], ["FIRE_ALL", "FIRE_ALL"]], job?.misfirePolicy || "FIRE_ONCE")),
        field("overlapPolicy", "Overlap policy", select([["SKIP", "SKIP"], ["ALLOW", "ALLOW"]], job?.overlapPolicy || "SKIP")))),
    h("fieldset", {},
      h("legend", {}, "Delivery"),
      h("div", { class: "row" },
        field("delivery", "Runs go to", select([["", "by default"], ["pull", "pulling workers"], ["kafka", "Kafka"], ["webhook", "the webhook"]], job?.delivery || "")),
        field("webhook.url", "Webhook URL", h("input", { value: job?.webhook?.url || "" }), "empty: no webhook"),
        field("webhook.secret", "Webhook secret", h("input", { type: "password", autocomplete: "off" }),
          editing ? "empty keeps the secret it has" : "whsec_ and a base64 key, optional"))),
    h("button", { type: "submit" }, editing ? "Save changes" : "Create job"),
  );

  const value = (path) => form.querySelector(`[data-field="${path}"]`)?.value ?? "";
  const chosenKind = () => form.querySelector('input[name="kind"]:checked').value;
  const schedule = () => {
    const k = chosenKind();
    if (k === "cron") return { cron: value("schedule.cron"), timezone: value("schedule.timezone") || undefined };
    if (k === "interval") {
      const out = { intervalSeconds: Number(value("schedule.intervalSeconds")) };
      if (value("schedule.startAt")) out.startAt = value("schedule.startAt");
      return out;
    }
    return { runAt: value("schedule.runAt") };
  };
  const showKinds = () => {
    const k = chosenKind();
    const shown = { runAt: ["schedule.runAt"], cron: ["schedule.cron", "schedule.timezone"],
      interval: ["schedule.intervalSeconds", "schedule.startAt"] }[k];
    for (const path of ["schedule.runAt", "schedule.cron", "schedule.timezone", "schedule.intervalSeconds", "schedule.startAt"]) {
      form.querySelector(`[data-field="${path}"]`).closest(".field").hidden = !shown.includes(path);
    }
  };
  let timer = null;
  let asked = 0;
  const refresh = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++asked;
      const from = previewFrom.value ? new Date(`${previewFrom.value}T00:00:00Z`).toISOString() : null;
      try {
        const answer = await get(`/api/v1/schedule/preview?${previewQuery(schedule(), 10, from)}`);
        if (mine === asked) preview.replaceChildren(fireList(answer.times));
      } catch (error) {
        if (mine !== asked) return;
        const messages = error.errors?.length ? error.errors.map((e) => `${e.field}: ${e.message}`) : [error.message];
        preview.replaceChildren(h("p", { class: "error" }, messages.join("; ")));
      }
    }, 250);
  };
  form.addEventListener("input", (e) => {
    if (e.target.name === "kind") showKinds();
    if (e.target.name?.startsWith("schedule") || e.target.name === "kind" || e.target === previewFrom) refresh();
  });
  form.addEventListener("change", (e) => {
    if (e.target.name === "kind") { showKinds(); refresh(); }
  });
  showKinds();
  refresh();

  const body = () => {
    const out = {
      name: value("name"),
      description: value("description"),
      jobType: value("jobType"),
      schedule: schedule(),
      retry: { maxAttempts: Number(value("retry.maxAttempts")), backoffSeconds: Number(value("retry.backoffSeconds")) },
      runTimeoutSeconds: Number(value("runTimeoutSeconds")),
      misfirePolicy: value("misfirePolicy"),
      overlapPolicy: value("overlapPolicy"),
    };
    try {
      out.jobData = JSON.parse(value("jobData"));
    } catch {
      throw new ApiError(400, { detail: "the data is not JSON", errors: [{ field: "jobData", message: "must be a JSON object" }] });
    }
    out.delivery = value("delivery") || (editing ? null : undefined);
    const url = value("webhook.url");
    if (url) {
      out.webhook = { url };
      if (value("webhook.secret")) out.webhook.secret = value("webhook.secret");
    } else if (editing) {
      out.webhook = null;
    }
    if (editing) {
      // A merge patch: the other kind's schedule fields go.
      const full = { runAt: null, cron: null, timezone: null, intervalSeconds: null, startAt: null };
      out.schedule = { ...full, ...out.schedule };
    }
    return out;
  };

  const showErrors = (error) => {
    for (const el of form.querySelectorAll(".error")) el.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const unplaced = [];
    for (const e of error.errors || []) {
      const inputs = [...form.querySelectorAll("[data-field]")]
        .filter((el) => e.field === el.dataset.field || e.field.startsWith(`${el.dataset.field}.`))
        .sort((a, b) => b.dataset.field.length - a.dataset.field.length);
      const input = inputs.find((el) => el.tagName !== "FIELDSET");
      if (input) {
        input.setAttribute("aria-invalid", "true");
        const box = document.getElementById(`${input.id}-error`);
        box.textContent = [box.textContent, e.message].filter(Boolean).join("; ");
      } else {
        unplaced.push(`${e.field}: ${e.message}`);
      }
    }
    general.textContent = unplaced.length ? unplaced.join("; ") : error.errors?.length ? "" : error.message;
    const first = form.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const sent = body();
      const saved = editing
        ? await call("PATCH", `/api/v1/jobs/${job.id}`, sent, { "If-Match": `"${job.version}"` })
        : await post("/api/v1/jobs", sent);
      say(`${saved.name} was ${editing ? "saved" : "created"}.`);
      location.hash = `#/jobs/${saved.id}`;
    } catch (error) {
      if (error instanceof ApiError) {
        say(error.status === 412 ? "The job changed meanwhile: reload it and try again." : error.message, true);
        showErrors(error);
      } else {
        say(error.message, true);
      }
    }
  });
  return form;
}

async function newJob() {
  const refused = refusal("admin");
  main.replaceChildren(...[h("h1", {}, "New job"),
    refused ? h("p", { class: "why" }, `Creating a job ${refused}.`) : null, jobForm(null)].filter(Boolean));
  if (refused) for (const b of main.querySelectorAll("button[type=submit]")) b.disabled = true;
  return () => {};
}

async function editJob(id) {
  let job;
  try {
    job = await get(`/api/v1/jobs/${id}`);
  } catch (error) {
    main.replaceChildren(h("h1", {}, "Edit job"), h("p", {}, error.message));
    return () => {};
  }
  main.replaceChildren(h("h1", {}, `Edit ${job.name}`), jobForm(job));
  return () => {};
}

// ---------- routing ----------

async function render() {
  cleanup();
  cleanup = () => {};
  showWho();
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  for (const a of document.querySelectorAll("header nav a")) {
    const target = a.getAttribute("href").slice(1);
    const current = target === "/" ? path === "/" : path.startsWith(target);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  let parts;
  if (path === "/") {
    document.title = "Overview · Scheduler";
    cleanup = await overview();
  } else if (path === "/jobs") {
    document.title = "Jobs · Scheduler";
    cleanup = await jobs(query);
  } else if (path === "/new") {
    document.title = "New job · Scheduler";
    cleanup = await newJob();
  } else if ((parts = /^\/jobs\/([0-9a-fA-F]{24})(\/edit)?$/.exec(path))) {
    document.title = "Job · Scheduler";
    cleanup = parts[2] ? await editJob(parts[1]) : await jobPage(parts[1]);
  } else {
    main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
  }
}

window.addEventListener("hashchange", () => {
  render().then(() => main.focus());
});
render();
