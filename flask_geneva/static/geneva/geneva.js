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
