// The microphone's level as a thin bar, in place of Gradio's scrolling waveform.
//
// The waveform redraws its canvas every frame while recording: with it, headless Chromium used 0.54-0.60 of a
// core here the whole time (the page only listening), without it 0.20. On a 2-core machine that third of a core
// is the language model's. The bar reads the level meter barge_in.js already runs (one value per 20 ms) and moves
// ten times a second, a transform only.
(() => {
  const ids = window.omniPage;
  const EVERY_MS = 100;
  const FLOOR_DBFS = -60; // an empty bar
  const FULL_DBFS = -10; // a full one
  let peak = -Infinity;
  let shownAt = 0;

  function bar() {
    const wrap = document.querySelector(`#${ids.MIC} .mic-wrap`);
    if (!wrap) return null;
    let level = wrap.querySelector(".omni-level");
    if (!level) {
      level = document.createElement("div");
      level.className = "omni-level";
      level.title = "Your microphone's level";
      level.appendChild(document.createElement("div"));
      wrap.prepend(level);
    }
    return level.firstChild;
  }

  window.omniMicLevel = (dbfs) => {
    peak = Math.max(peak, dbfs);
    const now = performance.now();
    if (now - shownAt < EVERY_MS) return;
    const fill = bar();
    if (fill) {
      const share = Math.min(1, Math.max(0, (peak - FLOOR_DBFS) / (FULL_DBFS - FLOOR_DBFS)));
      fill.style.transform = `scaleX(${share.toFixed(2)})`;
    }
    shownAt = now;
    peak = -Infinity;
  };
})();
