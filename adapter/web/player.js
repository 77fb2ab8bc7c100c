// Streamed playback with Web Audio: each chunk is scheduled to start exactly where the previous one
// ends, so chunks that arrive in time play without gaps. A chunk that arrives after the previous one
// has finished (the generator fell behind) starts after a short lead again, and counts as an underrun.

const LEAD_S = 0.12; // jitter buffer before the first chunk and after an underrun

export class StreamPlayer {
  constructor() {
    this.context = null;
    this.reset();
  }

  // Called from a click: browsers only let a user gesture start audio.
  async unlock() {
    if (!this.context) this.context = new AudioContext();
    if (this.context.state === "suspended") await this.context.resume();
  }

  reset() {
    this.stop();
    this.nextStart = 0;
    this.scheduledChunks = 0;
    this.scheduledSeconds = 0;
    this.underruns = 0;
    this.sources = new Set();
  }

  // `pcm`: Uint8Array of 16-bit little-endian mono samples.
  schedule(pcm, sampleRate) {
    const count = pcm.byteLength >> 1;
    if (count === 0) return;
    const view = new DataView(pcm.buffer, pcm.byteOffset, count * 2);
    const samples = new Float32Array(count);
    for (let i = 0; i < count; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
    const buffer = this.context.createBuffer(1, count, sampleRate);
    buffer.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const now = this.context.currentTime;
    if (this.nextStart < now) {
      if (this.scheduledChunks > 0) this.underruns += 1;
      this.nextStart = now + LEAD_S;
    }
    source.start(this.nextStart);
    this.nextStart += buffer.duration;
    this.scheduledChunks += 1;
    this.scheduledSeconds += buffer.duration;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
  }

  stop() {
    for (const source of this.sources || []) {
      try {
        source.stop();
      } catch {
        // already stopped
      }
    }
    if (this.sources) this.sources.clear();
  }
}
