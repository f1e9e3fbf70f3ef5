// modelyard catalog: search, filters and sorting on the index (state in the URL), copy buttons and the
// registry host on model pages. Without this script every page still shows everything.
"use strict";

(function registryHost() {
  // Built without --registry-host: the registry is the host this page is served from.
  if (!document.documentElement.hasAttribute("data-host-auto") || !location.host) return;
  for (const el of document.querySelectorAll(".reg-host")) el.textContent = location.host;
  if (location.protocol === "https:") for (const el of document.querySelectorAll(".reg-insecure")) el.remove();
})();

(function copyButtons() {
  const live = document.createElement("p");
  live.className = "vh";
  live.setAttribute("aria-live", "polite");
  document.body.append(live);
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const text = document.getElementById(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch {
        const area = document.createElement("textarea");  // no clipboard API (plain HTTP on another host)
        area.value = text;
        document.body.append(area);
        area.select();
        document.execCommand("copy");
        area.remove();
      }
      button.textContent = "Copied";
      button.classList.add("done");
      live.textContent = "Copied to the clipboard";
      setTimeout(() => { button.textContent = "Copy"; button.classList.remove("done"); }, 1600);
    });
  }
})();

(function catalog() {
  const form = document.getElementById("filters");
  const list = document.getElementById("models");
  if (!form || !list) return;
  const items = Array.from(list.children);
  const count = document.getElementById("count");
  const empty = document.getElementById("empty");
  const fields = ["q", "task", "library", "license", "size", "params", "sort"];
  const texts = new Map();  // what a search reads of each row, gathered on the first search
  function text(li) {
    if (!texts.has(li)) {
      const d = li.dataset, summary = li.querySelector(".summary");
      texts.set(li, [d.name, d.task, d.library, d.license, summary ? summary.textContent : ""].join(" ").toLowerCase());
    }
    return texts.get(li);
  }
  let words = null;  // model name -> the words of its card, fetched on first search

  function loadWords() {
    if (words) return;
    words = {};
    fetch(new URL("api/search.json", document.baseURI))
      .then((response) => (response.ok ? response.json() : {}))
      .then((data) => { words = data; apply(); })
      .catch(() => {});
  }

  function range(select, value) {
    const option = Array.from(select.options).find((o) => o.value === value);
    if (!option || !value) return null;
    return [Number(option.dataset.min), option.dataset.max ? Number(option.dataset.max) : Infinity];
  }

  function number(li, key) {
    const value = li.dataset[key];
    return value === "" ? null : Number(value);
  }

  function matches(li, state) {
    for (const key of ["task", "library", "license"]) {
      if (state[key] && li.dataset[key] !== state[key]) return false;
    }
    for (const [key, data] of [["size", "size"], ["params", "params"]]) {
      const bounds = range(form.elements[key], state[key]);
      if (!bounds) continue;
      const value = number(li, data);
      if (value === null || value < bounds[0] || value >= bounds[1]) return false;
    }
    if (state.q) {
      const haystack = text(li) + " " + ((words && words[li.dataset.name]) || "");
      for (const term of state.q.toLowerCase().split(/\s+/)) {
        if (term && !haystack.includes(term)) return false;
      }
    }
    return true;
  }

  function sorter(sort) {
    const key = { size: "size", "-size": "size", params: "params", downloads: "downloads", likes: "likes" }[sort];
    if (sort === "built") return (a, b) => (b.dataset.built || "").localeCompare(a.dataset.built || "");
    if (!key) return (a, b) => a.dataset.name.localeCompare(b.dataset.name);
    const sign = sort.startsWith("-") ? 1 : -1;
    return (a, b) => {
      const x = number(a, key), y = number(b, key);
      if (x === y) return a.dataset.name.localeCompare(b.dataset.name);
      if (x === null) return 1;  // unknown last, either way
      if (y === null) return -1;
      return sign * (x - y);
    };
  }

  function state() {
    const result = {};
    for (const f of fields) result[f] = form.elements[f].value.trim();
    return result;
  }

  function apply() {
    const s = state();
    if (s.q) loadWords();
    let shown = 0;
    for (const li of items) {
      li.hidden = !matches(li, s);
      if (!li.hidden) shown += 1;
    }
    list.append(...items.slice().sort(sorter(s.sort)));
    count.textContent = shown === items.length ? `${items.length} models` : `${shown} of ${items.length} models`;
    empty.hidden = shown > 0;
    const params = new URLSearchParams();
    for (const f of fields) if (s[f] && !(f === "sort" && s[f] === "name")) params.set(f, s[f]);
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  }

  const initial = new URLSearchParams(location.search);
  for (const f of fields) {
    const value = initial.get(f);
    if (value === null) continue;
    const input = form.elements[f];
    if (input.tagName === "SELECT" && !Array.from(input.options).some((o) => o.value === value)) continue;
    input.value = value;
  }
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  form.addEventListener("reset", () => setTimeout(apply));
  form.elements.q.addEventListener("focus", loadWords, { once: true });
  if (initial.toString()) apply();
})();
