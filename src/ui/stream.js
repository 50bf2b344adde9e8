// The event stream (GET /api/v1/events) read with fetch, so it can carry the token in a header
// (an EventSource cannot), resuming after its last event (Last-Event-ID) whenever it drops: a
// restart of the service, a network blip, a lagged notice. It pauses while the tab is hidden
// and resumes, missing nothing the journal keeps, when it is shown again.

import { authHeaders } from "./api.js";

/**
 * Follows the events of `query` (e.g. "jobId=..."), from `since` (a place, or null for from
 * now on). Calls `onEvent(type, data, id)` for each, `onGap()` when events were lost (the
 * caller reads the state again), `onState(text)` with how the stream is. Returns a function
 * that stops it.
 */
export function follow({ query = "", since = null, onEvent, onGap = () => {}, onState = () => {} }) {
  let last = since;
  let controller = null;
  let stopped = false;
  let retry = 500;

  async function run() {
    while (!stopped) {
      if (document.hidden) {
        onState("paused while the tab is hidden");
        await new Promise((resolve) => {
          const shown = () => {
            if (!document.hidden) {
              document.removeEventListener("visibilitychange", shown);
              resolve();
            }
          };
          document.addEventListener("visibilitychange", shown);
        });
        continue;
      }
      controller = new AbortController();
      const headers = authHeaders({ Accept: "text/event-stream" });
      if (last !== null) headers["Last-Event-ID"] = String(last);
      try {
        const response = await fetch(`/api/v1/events${query ? `?${query}` : ""}`, {
          headers,
          signal: controller.signal,
        });
        if (!response.ok) throw new Error(`the stream answered ${response.status}`);
        onState("live");
        retry = 500;
        await read(response.body);
      } catch (error) {
        if (stopped) return;
        onState("reconnecting…");
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, retry));
      retry = Math.min(retry * 2, 5000);
    }
  }

  async function read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        dispatch(block);
      }
    }
  }

  function dispatch(block) {
    let type = "message";
    let id = null;
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) type = line.slice(6).trim();
      else if (line.startsWith("id:")) id = line.slice(3).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return;
    let parsed = null;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch {
      return;
    }
    if (id !== null && id !== "") last = Number(id);
    if (type === "gap") onGap(parsed);
    else if (type !== "lagged") onEvent(type, parsed, last);
  }

  const hidden = () => {
    if (document.hidden && controller) controller.abort();
  };
  document.addEventListener("visibilitychange", hidden);
  run();
  return () => {
    stopped = true;
    document.removeEventListener("visibilitychange", hidden);
    if (controller) controller.abort();
  };
}
