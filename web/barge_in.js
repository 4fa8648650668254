// Barge-in, browser side: stop the reply the moment the user starts talking over it.
//
// The server's Silero detector decides whether it really is speech, but it only hears the microphone in 0.5 s
// chunks, so its verdict comes ~1 s after the user began. This script listens to the same microphone stream
// (echo-cancelled) in 20 ms frames and, while the reply plays, holds playback as soon as a loud enough run of
// sound lasts RUN_MS, and has the server hold the reply's generation too. If the server confirms a barge-in,
// the reply is cut where it was held (see CUT_REPLY in web/page.py); if it does not within RESUME_MS (a cough, a
// door), playback and generation resume where they stopped.
(() => {
  const ids = window.omniPage; // the element ids app.py uses (web/page.py)
  const REPLY = `#${ids.REPLY} audio`;
  const INTERRUPT = `#${ids.INTERRUPT} input`;
  const press = (id) => document.getElementById(id)?.click(); // hidden buttons wired to the server
  const FRAME_MS = 20;
  const RUN_MS = 200; // shorter than a syllable or two: coughs and clicks end sooner
  const MIN_DBFS = -40; // the same level gate as the server's barge_in_min_dbfs
  const ABOVE_FLOOR_DB = 12; // and this far above the quietest recent level (echo residue, room noise)
  const RESUME_MS = 2000; // the server's verdict takes 0.7-1.4 s after the hold

  // meters/streams: level meters made and microphone streams watched (one meter for any number of streams).
  const state = (window.omniBargeIn = { heldAt: null, heldPlayer: null, confirmedAt: null, holds: 0, meters: 0, streams: 0 });
  let floor = MIN_DBFS - ABOVE_FLOOR_DB;
  let run = 0;
  let resumeTimer = null;

  const worklet = `
    class Level extends AudioWorkletProcessor {
      constructor() { super(); this.sum = 0; this.n = 0; this.frame = Math.round(sampleRate * ${FRAME_MS} / 1000); }
      process(inputs) {
        const x = inputs[0] && inputs[0][0];
        if (x) {
          for (let i = 0; i < x.length; i++) this.sum += x[i] * x[i];
          this.n += x.length;
          if (this.n >= this.frame) { this.port.postMessage(10 * Math.log10(this.sum / this.n + 1e-12)); this.sum = 0; this.n = 0; }
        }
        return true;
      }
    }
    registerProcessor("omni-level", Level);`;

  function playingReply() {
    return [...document.querySelectorAll(REPLY)].find((a) => !a.paused && !a.ended && a.currentTime > 0);
  }

  function interruptible() {
    const box = document.querySelector(INTERRUPT);
    return !box || box.checked;
  }

  function hold(player) {
    state.heldAt = player.currentTime;
    state.heldPlayer = player;
    state.holds += 1;
    player.pause();
    press(ids.HOLD);
    resumeTimer = setTimeout(() => {
      // No barge-in confirmed: it was not speech. Carry on as if nothing happened.
      if (state.heldPlayer === player && player.paused) player.play().catch(() => {});
      press(ids.RESUME);
      release();
    }, RESUME_MS);
  }

  function release() {
    clearTimeout(resumeTimer);
    resumeTimer = null;
    state.heldAt = null;
    state.heldPlayer = null;
  }

  function onLevel(dbfs) {
    if (state.heldPlayer) return;
    const player = playingReply();
    if (!player || !interruptible()) {
      run = 0;
      return;
    }
    // The floor falls at once and rises slowly, so it follows the quiet between words, not the words.
    floor = dbfs < floor ? dbfs : floor + 0.05;
    if (dbfs >= Math.max(MIN_DBFS, floor + ABOVE_FLOOR_DB)) {
      run += FRAME_MS;
      if (run >= RUN_MS) {
        run = 0;
        hold(player);
      }
    } else {
      run = Math.max(0, run - FRAME_MS); // a short dip (between phonemes) does not restart the run
    }
  }

  // Made at page load, so that nothing slows the start of a recording; it runs once the user clicks Record.
  let context = null;
  let ready = null;
  try {
    context = new AudioContext();
    ready = context.audioWorklet.addModule(URL.createObjectURL(new Blob([worklet], { type: "text/javascript" })));
  } catch (e) {
    console.warn("barge-in: no Web Audio, the server's detector alone decides", e);
  }
  let source = null;
  let meter = null; // one meter for the page; each new microphone stream is connected to it in turn

  async function watch(stream) {
    if (!context) return;
    try {
      await ready;
      await context.resume();
      if (!meter) {
        meter = new AudioWorkletNode(context, "omni-level");
        meter.port.onmessage = (e) => {
          onLevel(e.data);
          window.omniMicLevel?.(e.data); // level.js shows it
        };
        state.meters += 1;
      }
      source?.disconnect();
      source = context.createMediaStreamSource(stream);
      source.connect(meter); // not to the speakers: the meter only reads
      state.streams += 1;
    } catch (e) {
      console.warn("barge-in: no level meter, the server's detector alone decides", e);
    }
  }

  // Stop conversation: a held reply must not come back when the hold times out.
  window.omniDropHold = release;

  // The server confirmed a barge-in (CUT_REPLY): return the seconds of the reply the user heard.
  window.omniCutReply = () => {
    let heard = 0;
    document.querySelectorAll(REPLY).forEach((a) => {
      heard = Math.max(heard, a.currentTime);
      a.pause();
    });
    if (state.heldAt !== null) heard = state.heldAt;
    state.confirmedAt = performance.now();
    release();
    return heard;
  };

  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) return;
  const getUserMedia = media.getUserMedia.bind(media);
  media.getUserMedia = async (constraints) => {
    if (constraints && constraints.audio === true) {
      // Chromium's defaults, made explicit: the reply leaking from the speakers must not sound like the user.
      constraints = { ...constraints, audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } };
    }
    const stream = await getUserMedia(constraints);
    if (stream.getAudioTracks().length) setTimeout(() => watch(stream), 0); // after the recorder has it
    return stream;
  };
})();
