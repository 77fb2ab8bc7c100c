// WAV in and out: where the samples start in a streamed WAV, and a WAV file around 16-bit mono PCM.

// The offset of the first sample of a RIFF/WAVE stream: the bytes after the "data" chunk header.
export function wavDataOffset(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at) => String.fromCharCode(...bytes.subarray(at, at + 4));
  if (bytes.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV stream");
  let at = 12;
  while (at + 8 <= bytes.byteLength) {
    const size = view.getUint32(at + 4, true);
    if (tag(at) === "data") return at + 8;
    at += 8 + size + (size % 2);
  }
  throw new Error("WAV stream without a data chunk");
}

// A complete PCM WAV file: 16-bit little-endian mono at `sampleRate`.
export function wavFile(pcmChunks, sampleRate) {
  const dataBytes = pcmChunks.reduce((sum, chunk) => sum + chunk.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const put = (at, text) => [...text].forEach((c, i) => header.setUint8(at + i, c.charCodeAt(0)));
  put(0, "RIFF");
  header.setUint32(4, 36 + dataBytes, true);
  put(8, "WAVE");
  put(12, "fmt ");
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true); // bytes per second
  header.setUint16(32, 2, true); // block align
  header.setUint16(34, 16, true); // bits per sample
  put(36, "data");
  header.setUint32(40, dataBytes, true);
  return new Blob([header.buffer, ...pcmChunks], { type: "audio/wav" });
}
