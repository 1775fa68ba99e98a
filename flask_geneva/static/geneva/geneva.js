// The admin's few behaviours beyond htmx, as delegated listeners: the page's
// Content-Security-Policy runs scripts from this server only, never inline handlers.
"use strict";

// <input type="checkbox" data-geneva-select-all="ids">: (un)checks every input[name=ids].
document.addEventListener("change", (event) => {
  const box = event.target.closest("[data-geneva-select-all]");
  if (!box) return;
  const name = box.getAttribute("data-geneva-select-all");
  for (const input of document.querySelectorAll("input[type=checkbox]")) {
    if (input.name === name) input.checked = box.checked;
  }
});

// <button data-geneva-dismiss=".bulk">: removes the nearest enclosing .bulk.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-geneva-dismiss]");
  if (!button) return;
  const target = button.closest(button.getAttribute("data-geneva-dismiss"));
  if (target) target.remove();
});

// The theme: the system's (prefers-color-scheme) until the toggle picks one, which the
// browser remembers (localStorage). <html data-theme="light|dark"> overrides the system.
const THEME_KEY = "geneva-theme";
function applyTheme(theme) {
  if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  else delete document.documentElement.dataset.theme;
  const button = document.querySelector("[data-geneva-theme]");
  if (button) button.textContent = theme === "dark" ? "Light" : theme === "light" ? "Dark" : "Theme";
}
function storedTheme() {
  try { return localStorage.getItem(THEME_KEY); } catch (e) { return null; }
}
applyTheme(storedTheme());
document.addEventListener("DOMContentLoaded", () => applyTheme(storedTheme()));
document.addEventListener("click", (event) => {
  if (!event.target.closest("[data-geneva-theme]")) return;
  const dark = getComputedStyle(document.documentElement).colorScheme === "dark";
  const next = dark ? "light" : "dark";
  try { localStorage.setItem(THEME_KEY, next); } catch (e) { /* private mode: this page only */ }
  applyTheme(next);
});

// Keyboard: j/k move through the rows of the page's table, Enter opens the row, / goes
// to the error search (or the first filter), Esc leaves a field or closes the help, ? shows the help.
function rows() {
  return [...document.querySelectorAll(".geneva-table tbody tr")].filter((r) => r.querySelector("a[href]"));
}
function move(step) {
  const all = rows();
  if (!all.length) return;
  const at = all.findIndex((r) => r.classList.contains("kb-current"));
  const next = all[Math.max(0, Math.min(all.length - 1, at < 0 ? 0 : at + step))];
  for (const r of all) r.classList.remove("kb-current");
  next.classList.add("kb-current");
  next.scrollIntoView({ block: "nearest" });
}
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const help = document.getElementById("geneva-kb-help");
  const typing = event.target.closest("input, textarea, select, [contenteditable]");
  if (event.key === "Escape") {
    if (help && !help.hidden) help.hidden = true;
    else if (typing) event.target.blur();
    return;
  }
  if (typing) return;
  if (event.key === "j" || event.key === "k") {
    move(event.key === "j" ? 1 : -1);
  } else if (event.key === "Enter") {
    const current = document.querySelector("tr.kb-current a[href]");
    if (!current) return;
    event.preventDefault();
    current.click();
  } else if (event.key === "/") {
    const field = document.querySelector('#geneva-filters input[name="error"]')
      || document.querySelector("#geneva-filters input:not([type=hidden]):not([type=checkbox]), #geneva-filters select");
    if (!field) return;
    event.preventDefault();
    field.focus();
  } else if (event.key === "?") {
    if (help) help.hidden = !help.hidden;
  }
});
