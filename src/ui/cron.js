// A schedule in plain words: "At 09:00 on Monday, Europe/Berlin", "Every 5 minutes, UTC",
// "Every hour from 2030-01-01 10:00 UTC", "Once, at ...". Common cron shapes are put in
// words; anything else is shown as the expression itself, with its zone.

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const DAY_NAMES = { SUN: 0, MON: 1, TUE: 2, WED: 3, THU: 4, FRI: 5, SAT: 6 };
const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
  "September", "October", "November", "December"];
const MONTH_NAMES = { JAN: 1, FEB: 2, MAR: 3, APR: 4, MAY: 5, JUN: 6, JUL: 7, AUG: 8, SEP: 9,
  OCT: 10, NOV: 11, DEC: 12 };

const two = (n) => String(n).padStart(2, "0");
const number = (text) => (/^\d+$/.test(text) ? Number(text) : null);

function list(values) {
  if (values.length < 2) return values.join("");
  return `${values.slice(0, -1).join(", ")} and ${values[values.length - 1]}`;
}

/** The days of a day-of-week field as names, or null when it is not a plain list or range. */
function days(field) {
  const out = [];
  for (const part of field.toUpperCase().split(",")) {
    const [from, to] = part.split("-");
    const a = DAY_NAMES[from] ?? number(from);
    const b = to === undefined ? a : DAY_NAMES[to] ?? number(to);
    if (a === null || b === null || a === undefined || b === undefined) return null;
    if (to !== undefined && ((a === 1 && b === 5))) {
      out.push("Monday to Friday");
      continue;
    }
    for (let d = a; d <= b; d++) out.push(DAYS[d % 7]);
  }
  return list(out);
}

function months(field) {
  const out = [];
  for (const part of field.toUpperCase().split(",")) {
    const m = MONTH_NAMES[part] ?? number(part);
    if (!m || m > 12) return null;
    out.push(MONTHS[m - 1]);
  }
  return list(out);
}

/** A cron expression (5 fields, or 6 with seconds first) in words, in zone `tz`. */
export function describeCron(expression, tz = "UTC") {
  const fields = expression.trim().split(/\s+/);
  const zone = tz || "UTC";
  const fallback = `Cron "${expression.trim()}", ${zone}`;
  if (fields.length !== 5 && fields.length !== 6) return fallback;
  const [second, minute, hour, dom, month, dow] =
    fields.length === 6 ? fields : ["0", ...fields];
  const sec = number(second);
  if (sec === null) {
    const every = /^\*\/(\d+)$/.exec(second);
    if (second === "*" && [minute, hour, dom, month, dow].every((f) => f === "*")) {
      return `Every second, ${zone}`;
    }
    if (every && [minute, hour, dom, month, dow].every((f) => f === "*")) {
      return `Every ${every[1]} seconds, ${zone}`;
    }
    return fallback;
  }
  const rest = [dom, month, dow];
  const everyMinutes = /^\*\/(\d+)$/.exec(minute);
  if (everyMinutes && hour === "*" && rest.every((f) => f === "*")) {
    return `Every ${everyMinutes[1]} minutes, ${zone}`;
  }
  if (minute === "*" && hour === "*" && rest.every((f) => f === "*")) {
    return `Every minute, ${zone}`;
  }
  const m = number(minute);
  if (m === null) return fallback;
  const everyHours = /^\*\/(\d+)$/.exec(hour);
  if ((hour === "*" || everyHours) && rest.every((f) => f === "*")) {
    const every = everyHours ? `every ${everyHours[1]} hours` : "every hour";
    return `At minute ${m} past ${every}, ${zone}`;
  }
  const hours = hour.split(",").map(number);
  if (hours.some((h) => h === null)) return fallback;
  let text = `At ${list(hours.map((h) => `${two(h)}:${two(m)}${sec ? `:${two(sec)}` : ""}`))}`;
  if (dom !== "*" && dom !== "?") {
    const d = dom.split(",").map(number);
    if (d.some((x) => x === null)) return fallback;
    text += ` on day ${list(d.map(String))} of the month`;
  }
  if (month !== "*") {
    const ms = months(month);
    if (!ms) return fallback;
    text += ` in ${ms}`;
  }
  if (dow !== "*" && dow !== "?") {
    const ds = days(dow);
    if (!ds) return fallback;
    text += ` on ${ds}`;
  } else if (dom === "*" || dom === "?") {
    text += month === "*" ? ", every day" : "";
  }
  return `${text}, ${zone}`;
}

/** A job's schedule (as the API shows it) in words. */
export function describeSchedule(schedule) {
  if (!schedule) return "";
  if (schedule.cron) return describeCron(schedule.cron, schedule.timezone);
  if (schedule.intervalSeconds) {
    const s = schedule.intervalSeconds;
    const every =
      s % 86400 === 0 ? `${s / 86400} day${s === 86400 ? "" : "s"}`
      : s % 3600 === 0 ? `${s / 3600} hour${s === 3600 ? "" : "s"}`
      : s % 60 === 0 ? `${s / 60} minute${s === 60 ? "" : "s"}`
      : `${s} second${s === 1 ? "" : "s"}`;
    const from = schedule.startAt ? ` from ${schedule.startAt}` : "";
    return `Every ${every.replace(/^1 /, "")}${from}`;
  }
  if (schedule.runAt) return `Once, at ${schedule.runAt}`;
  return "";
}
