// tracker's dashboard, live: with this script the first page's totals and the newest rows of
// the query log and the connections follow the database without a reload. The pages work
// fully without it. Names come from the network, so they are only ever set as text.
"use strict";
(function () {
  const target = document.querySelector("[data-live]");
  if (!target || !window.EventSource || !window.fetch) {
    return;
  }
  const source = target.getAttribute("data-live");
  const list = target.hasAttribute("data-after");
  let after = target.getAttribute("data-after");
  // Rows a live list keeps: the oldest go as new ones come, so a page left open stays small.
  const KEEP = 200;
  let busy = false;
  let again = false;

  // A link only to a page of this dashboard: a path of its own, never another scheme or host.
  function ownPath(href) {
    return typeof href === "string" && href.startsWith("/") && !href.startsWith("//");
  }

  function row(r) {
    const li = document.createElement("li");
    li.setAttribute("data-id", String(r.id));
    li.className = "new";
    const name = document.createElement("span");
    name.className = "name";
    if (ownPath(r.href)) {
      const a = document.createElement("a");
      a.setAttribute("href", r.href);
      a.textContent = r.name;
      name.appendChild(a);
    } else {
      name.textContent = r.name;
    }
    const detail = document.createElement("span");
    detail.className = "num";
    detail.textContent = r.detail;
    li.append(name, detail);
    return li;
  }

  function addRows(data) {
    for (const r of data.rows) {
      target.insertBefore(row(r), target.firstChild);
    }
    while (target.children.length > KEEP) {
      target.removeChild(target.lastChild);
    }
    if (data.rows.length > 0) {
      const empty = document.getElementById("empty");
      if (empty) {
        empty.remove();
      }
    }
    after = String(data.through);
  }

  function setTotals(data) {
    for (const id of Object.keys(data)) {
      const value = document.querySelector("#" + id + " .value");
      if (value) {
        value.textContent = data[id].text;
        value.setAttribute("value", String(data[id].value));
      }
    }
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    let url = source;
    if (list) {
      url += (url.includes("?") ? "&" : "?") + "after=" + encodeURIComponent(after);
    }
    fetch(url, { cache: "no-store", credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : null))
      .then((data) => {
        if (data) {
          (list ? addRows : setTotals)(data);
        }
      })
      .catch(() => {})
      .finally(() => {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  new EventSource("/events").addEventListener("change", refresh);
})();
