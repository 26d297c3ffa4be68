// The package must run in browsers too: no Node-only imports or globals in the source, and no
// runtime dependencies.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

test("src uses no Node-only modules or globals", () => {
  for (const f of readdirSync(`${root}/src`)) {
    const text = readFileSync(`${root}/src/${f}`, "utf8");
    for (const line of text.split("\n")) {
      const m = /^\s*(?:import|export)\b.*from\s+"([^"]+)"/.exec(line);
      if (m) assert.ok(m[1].startsWith("./"), `${f}: imports ${m[1]}`);
    }
    assert.doesNotMatch(text, /\b(require\(|process\.|Buffer\b|__dirname|setImmediate)/, f);
  }
});

test("zero runtime dependencies, ESM with an exports map", () => {
  const pkg = JSON.parse(readFileSync(`${root}/package.json`, "utf8"));
  assert.equal(pkg.type, "module");
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.peerDependencies, undefined);
  assert.ok(pkg.exports["."].import && pkg.exports["."].types);
  assert.equal(pkg.engines.node, ">=18");
});
