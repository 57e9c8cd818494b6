// The hostwire console: polls /hostwire/api/overview every 2 s and runs the buttons.
"use strict";

const POLL_MS = 2000;

function cell(text, field) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (field) td.dataset.field = field;
  return td;
}

function emptyRow(columns, text) {
  const tr = document.createElement("tr");
  const td = cell(text);
  td.colSpan = columns;
  td.className = "muted";
  tr.append(td);
  return tr;
}

function showMessage(text) {
  const box = document.getElementById("message");
  box.textContent = text || "";
  box.hidden = !text;
}

function updatePlugins(plugins) {
  for (const p of plugins) {
    const row = document.querySelector(`#plugins tr[data-plugin="${CSS.escape(p.name)}"]`);
    if (!row) continue;
    for (const field of ["state", "calls", "failures", "p50_ms", "p99_ms"]) {
      const td = row.querySelector(`[data-field="${field}"]`);
      if (td && td.textContent !== String(p[field])) td.textContent = String(p[field]);
    }
  }
}

function updateFailures(failures) {
  const body = document.querySelector("#failures tbody");
  const rows = failures.map((f) => {
    const tr = document.createElement("tr");
    tr.append(cell(f.at_text), cell(f.plugin), cell(f.export), cell(f.kind), cell(f.reason));
    return tr;
  });
  body.replaceChildren(...(rows.length ? rows : [emptyRow(5, "No failures.")]));
}

function updateDeliveries(data) {
  const body = document.querySelector("#deliveries tbody");
  if (!body) return;
  const rows = data.deliveries.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.event = d.event_id;
    tr.dataset.plugin = d.plugin;
    const id = document.createElement("code");
    id.textContent = d.event_id;
    const idCell = cell("");
    idCell.append(id);
    const action = cell("");
    if (d.state === "dead") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "replay";
      button.textContent = "Replay";
      button.dataset.action = `/hostwire/deliveries/${encodeURIComponent(d.event_id)}/replay?plugin=${encodeURIComponent(d.plugin)}`;
      action.append(button);
    }
    tr.append(idCell, cell(d.type), cell(d.subject), cell(d.plugin), cell(d.state, "state"),
      cell(d.attempts, "attempts"), cell(d.last_error, "last_error"), action);
    return tr;
  });
  body.replaceChildren(...(rows.length ? rows : [emptyRow(8, "No deliveries.")]));
  const counts = document.getElementById("delivery-counts");
  counts.textContent = data.delivery_counts.length
    ? data.delivery_counts.map((c) => `${c.plugin}: ${c.pending} pending, ${c.dead} dead${c.lagging ? " (lagging)" : ""}`).join("; ")
    : "Nothing undelivered.";
}

function updateRows(data) {
  const head = document.querySelector("#rows thead tr");
  head.replaceChildren(...data.columns.map((c) => {
    const th = document.createElement("th");
    th.textContent = c;
    return th;
  }));
  const rows = data.rows.map((row) => {
    const tr = document.createElement("tr");
    tr.append(...data.columns.map((c) => cell(row[c], c)));
    return tr;
  });
  document.querySelector("#rows tbody").replaceChildren(
    ...(rows.length ? rows : [emptyRow(Math.max(1, data.columns.length), "Nothing to show.")]));
}

async function poll() {
  const live = document.getElementById("live");
  const page = document.body.dataset.page;
  const source = page
    ? `/hostwire/api/pages/${encodeURIComponent(page)}`
    : `/hostwire/api/overview${location.search}`;
  try {
    const answer = await fetch(source, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!answer.ok) {
      live.textContent = answer.status === 401 ? "logged out: reload to log in" : `update failed (${answer.status})`;
      return;
    }
    const data = await answer.json();
    if (page) {
      updateRows(data);
    } else {
      updatePlugins(data.plugins);
      updateFailures(data.recent_failures);
      updateDeliveries(data);
    }
    live.textContent = `live, updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    live.textContent = "update failed: the server did not answer";
  }
}

async function act(button) {
  button.disabled = true;
  try {
    const answer = await fetch(button.dataset.action, { method: "POST", credentials: "same-origin" });
    if (answer.ok) {
      showMessage("");
    } else {
      let message = `${button.textContent} failed (${answer.status})`;
      try {
        const body = await answer.json();
        if (body && body.error && body.error.message) message = `${button.textContent} failed: ${body.error.message}`;
      } catch (error) {
        // not JSON: keep the status line
      }
      showMessage(message);
    }
  } catch (error) {
    showMessage(`${button.textContent} failed: the server did not answer`);
  } finally {
    button.disabled = false;
    await poll();
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) act(button);
});
setInterval(poll, POLL_MS);
