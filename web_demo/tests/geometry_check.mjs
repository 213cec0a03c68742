// The page's resize-and-crop geometry against the Python runtime's (used by tests/web): reads a JSON
// file of [w, h, s, nw, nh, left, top] rows (resize_plan) and a manifest, prints one JSON object
// with the rows resizePlan computes otherwise and what validateManifest says of the manifest with
// the geometry fields absent, as exported, and with values this page does not implement.
//   node web_demo/tests/geometry_check.mjs PLANS.json MANIFEST.json

import { readFileSync } from "node:fs";
import { validateManifest } from "../bundle.js";
import { resizePlan } from "../preprocess.js";

const [plansPath, manifestPath] = process.argv.slice(2);
const plans = JSON.parse(readFileSync(plansPath, "utf8"));
const mismatches = [];
for (const [w, h, s, ...want] of plans) {
  const p = resizePlan(w, h, s);
  const got = [p.nw, p.nh, p.left, p.top];
  if (got.some((v, i) => v !== want[i])) mismatches.push({ w, h, s, want, got });
}

const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
const verdict = (edit) => {
  const m = structuredClone(manifest);
  edit(m.input);
  try {
    validateManifest(m);
    return "ok";
  } catch (e) {
    return e.message;
  }
};
const manifests = {
  exported: verdict(() => {}),
  absent: verdict((i) => {
    delete i.resize_rounding;
    delete i.crop_offset;
  }),
  halfUp: verdict((i) => (i.resize_rounding = "half_up")),
  roundOffset: verdict((i) => (i.crop_offset = "round")),
};
process.stdout.write(JSON.stringify({ checked: plans.length, mismatches: mismatches.slice(0, 20), manifests }) + "\n");
