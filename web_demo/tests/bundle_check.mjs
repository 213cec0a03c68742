// Checks of bundle.js's size handling that a real server does not exercise (used by tests/web):
// a body without Content-Length (as a compressing server sends it) is counted as it streams in,
// refused once it passes the manifest's size without being read further, and accepted when exact.
// Prints one JSON object.

import { UrlSource } from "../bundle.js";

function streamed(chunks, counter) {
  let i = 0;
  const body = new ReadableStream({
    pull(controller) {
      if (i < chunks) {
        counter.pulled += 1;
        controller.enqueue(new Uint8Array(1024));
        i += 1;
      } else controller.close();
    },
  });
  return new Response(body, { status: 200, headers: { "Content-Encoding": "gzip" } });
}

const result = {};
const counter = { pulled: 0 };
globalThis.fetch = async () => streamed(1 << 20, counter); // 1 GiB if it were all read
const source = new UrlSource("http://localhost/bundle/");
try {
  await source.get("index/texts.json", 4096);
  result.bigger = "accepted";
} catch (e) {
  result.bigger = e.message;
}
result.chunksPulled = counter.pulled;
globalThis.fetch = async () => streamed(4, { pulled: 0 });
result.exact = (await source.get("index/texts.json", 4096)).byteLength;
globalThis.fetch = async () => streamed(3, { pulled: 0 });
try {
  await source.get("index/texts.json", 4096);
  result.shorter = "accepted";
} catch (e) {
  result.shorter = e.message;
}
process.stdout.write(JSON.stringify(result) + "\n");
