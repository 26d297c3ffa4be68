// Lease: withLease releases the lease when its body throws, and the body's error comes through.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Leases } from "sluice-client";

import { env, uniqueId, summary } from "./helpers.mjs";

test("lease: released when the body throws; the error propagates", { timeout: 60_000 }, async () => {
  const sluice = env("SLUICE_URL");
  const leases = new Leases(sluice);
  const value = uniqueId("ts-uploads");
  const descriptors = [{ uploads: value }];
  const start = performance.now();
  const boom = new Error("the upload failed");
  let heldId = null;
  let inUseInside = null;
  await assert.rejects(
    leases.withLease("sdk", descriptors, async (lease) => {
      heldId = lease.id;
      const inside = await leases.holders("sdk", descriptors[0]);
      inUseInside = inside.pools[0].in_use;
      throw boom;
    }),
    (e) => e === boom,
  );
  assert.ok(typeof heldId === "string" && heldId.length > 0, "the body saw its lease");
  assert.equal(inUseInside, 1, "held while the body ran");
  const after = await leases.holders("sdk", descriptors[0]);
  const pool = after.pools.find((p) => p.name === "uploads") ?? after.pools[0];
  assert.equal(pool.in_use, 0, JSON.stringify(after));
  const again = await leases.acquire("sdk", descriptors, { waitMs: 0 });
  assert.ok(again.id, "the slot is free again");
  await again.release();
  const elapsed = performance.now() - start;
  summary({ test: "lease", attempts: 1, "429s": 0, in_use_after: pool.in_use, elapsed_ms: Math.round(elapsed) });
});
