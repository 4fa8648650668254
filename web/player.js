// Live reply audio: each reply is one continuous mp3 stream from the app's own route (/omni/live/<id>, served only
// to the browser that owns it), played by the page's <audio> element through Media Source Extensions as the bytes
// arrive. Gradio's streamed gr.Audio goes through an AAC encoder, an HLS playlist and hls.js polling instead, which
// cost 0.3-1.2 s before playback here.
//
// For tests and the browser benchmark, the page keeps its own clock of every reply:
//   window.omniAudible: performance.now() when each reply's first sample started playing
//   window.omniReplies: per reply {url, requestedAt, firstBytesAt, playingAt, stalls: [[start, end], ...]}
(() => {
  const PLAYER = "omni-player";
  const audible = (window.omniAudible = []);
  const replies = (window.omniReplies = []);
  let current = null; // {record, controller}

  function player() {
    let audio = document.getElementById(PLAYER);
    if (audio) return audio;
    audio = document.createElement("audio");
    audio.id = PLAYER;
    audio.controls = true;
    audio.style.width = "100%";
    (document.getElementById(window.omniPage.REPLY) || document.body).appendChild(audio);
    audio.addEventListener("playing", () => {
      const record = current?.record;
      if (!record) return;
      const now = performance.now();
      if (record.playingAt === null) {
        record.playingAt = now;
        audible.push(now);
      }
      const stall = record.stalls.at(-1);
      if (stall && stall[1] === null) stall[1] = now;
    });
    audio.addEventListener("waiting", () => {
      const record = current?.record;
      if (record?.playingAt !== null && record?.bytes > 0 && !record.done) record.stalls.push([performance.now(), null]);
    });
    // Played to the end: the server re-arms the microphone in half duplex (a hidden button, see app.py).
    audio.addEventListener("ended", () => document.getElementById(window.omniPage.PLAYED)?.click());
    return audio;
  }

  function stop() {
    if (!current) return;
    current.controller.abort();
    current = null;
  }

  async function feed(url, record, controller, mediaSource) {
    const buffer = mediaSource.addSourceBuffer("audio/mpeg");
    const queue = [];
    let ended = false;
    const pump = () => {
      if (buffer.updating || mediaSource.readyState !== "open") return;
      if (queue.length) buffer.appendBuffer(queue.shift());
      else if (ended && record.bytes > 0) mediaSource.endOfStream(); // nothing came: no "ended", nothing re-armed
    };
    buffer.addEventListener("updateend", pump);
    try {
      const response = await fetch(url, { signal: controller.signal, cache: "no-store" });
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        record.firstBytesAt ??= performance.now();
        record.bytes += value.length;
        queue.push(value);
        pump();
      }
      ended = record.done = true;
      pump();
    } catch (e) {
      if (e.name !== "AbortError") console.warn("reply stream failed", e);
    }
  }

  // The server opened a reply stream (app.py sends its URL when the turn ends): play it as it comes.
  window.omniPlay = (url) => {
    if (!url) return;
    stop();
    const record = { url, requestedAt: performance.now(), firstBytesAt: null, playingAt: null, bytes: 0, done: false, stalls: [] };
    replies.push(record);
    const controller = new AbortController();
    current = { record, controller };
    const audio = player();
    if (window.MediaSource && MediaSource.isTypeSupported("audio/mpeg")) {
      const mediaSource = new MediaSource();
      mediaSource.addEventListener("sourceopen", () => feed(url, record, controller, mediaSource), { once: true });
      audio.src = URL.createObjectURL(mediaSource);
    } else {
      audio.src = url; // progressive mp3: every browser plays a growing file, a little later
    }
    audio.play().catch(() => {});
  };

  // Stop conversation, or a confirmed barge-in: silence now, and drop the rest of the stream.
  window.omniStopReply = () => {
    stop();
    document.getElementById(PLAYER)?.pause();
  };
})();
