// Conveniences only: every page works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The new key's secret: a copy button (shown only when the clipboard can be used).
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  }
  for (const field of document.querySelectorAll("input[data-select-all]")) {
    field.addEventListener("focus", () => field.select());
  }
  // Revoking cannot be undone: ask first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
