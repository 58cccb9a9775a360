// Berth web UI: small enhancements; every page works without this file.
"use strict";
document.addEventListener("click", async (e) => {
  const b = e.target.closest("button.copy");
  if (!b) return;
  const text = b.dataset.copy || "";
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard (plain HTTP, or refused): select the text so Ctrl+C works.
    const code = b.parentElement.querySelector("code");
    if (code) {
      const r = document.createRange();
      r.selectNodeContents(code);
      const s = getSelection();
      s.removeAllRanges();
      s.addRange(r);
    }
  }
  const was = b.textContent;
  b.textContent = "Copied";
  setTimeout(() => { b.textContent = was; }, 1500);
});
