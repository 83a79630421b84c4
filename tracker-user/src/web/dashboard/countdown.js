// tracker's dashboard, countdowns: every timed block's "ends in ..." on the page ticks down
// without a reload and, at its end, says the block ended and takes away the buttons that only
// made sense while it ran. Without this script the page still says the time left as of when it
// was made, and the time of day it ends.
"use strict";
(function () {
  const clocks = Array.from(document.querySelectorAll("[data-ends]"));
  if (clocks.length === 0) {
    return;
  }
  const SECOND = 1000;
  const MINUTE = 60 * SECOND;
  // How often the text is redrawn: twice a second, so a shown second is never a whole second late.
  const REDRAW = SECOND / 2;
  // The end and "now" are both the VPN host's (data-now: when it made the page), and the time
  // since is the page's own monotonic clock: a phone whose clock is off still counts right.
  const loaded = performance.now();

  function left(el) {
    return Number(el.getAttribute("data-ends")) - Number(el.getAttribute("data-now")) - (performance.now() - loaded);
  }

  // As the server's clock::countdown says it: rounded up, seconds under a minute.
  function say(ms) {
    if (ms < MINUTE) {
      return String(Math.min(59, Math.max(1, Math.ceil(ms / SECOND)))) + " s";
    }
    const minutes = Math.ceil(ms / MINUTE);
    const h = Math.floor(minutes / 60);
    const m = minutes % 60;
    if (h === 0) {
      return m + " min";
    }
    return m === 0 ? h + " h" : h + " h " + m + " min";
  }

  // The kernel stops enforcing a timed block at its end by itself, so the page may say so.
  function ended(el) {
    const rule = el.getAttribute("data-rule");
    for (const form of document.querySelectorAll("form.while-on")) {
      if (form.getAttribute("data-rule") === rule) {
        form.remove();
      }
    }
    const box = el.closest("[data-ended]") || el;
    box.textContent = box.getAttribute("data-ended") || "ended";
  }

  let running = clocks;
  function tick() {
    running = running.filter((el) => {
      const ms = left(el);
      if (ms <= 0) {
        ended(el);
        return false;
      }
      const text = el.querySelector(".left");
      if (text) {
        text.textContent = say(ms);
      }
      return true;
    });
    if (running.length > 0) {
      setTimeout(tick, REDRAW);
    }
  }
  tick();
})();
