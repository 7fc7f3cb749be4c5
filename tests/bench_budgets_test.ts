// The verdicts `deno task bench` prints at its end (bench/bench.ts): each
// budget is called met or NOT MET from the figures, at the bound itself too,
// so that a summary line can be trusted without redoing its arithmetic.

import assert from "node:assert/strict";
import { budgetLine, rising, throughputBudget } from "../bench/bench.ts";

Deno.test("a ratio on the wrong side of its bound is NOT MET, and one on the bound is met", () => {
  assert.match(
    budgetLine("cold start", 1.27, "at most", 1.15),
    /^cold start +1\.27× {2}budget at most 1\.15× {2}NOT MET$/,
  );
  assert.match(
    budgetLine("cold start", 1.15, "at most", 1.15),
    /1\.15× {2}budget at most 1\.15× {2}met$/,
  );
  // A miss that two decimals would round onto the bound shows a third.
  assert.match(
    budgetLine("cold start", 1.1532, "at most", 1.15),
    /1\.153× {2}budget at most 1\.15× {2}NOT MET$/,
  );
  assert.match(
    budgetLine("throughput", 0.8961, "at least", 0.9),
    /0\.896× {2}budget at least 0\.90× {2}NOT MET$/,
  );
  assert.match(
    budgetLine("throughput", 0.89, "at least", 0.9),
    /0\.89× {2}budget at least 0\.90× {2}NOT MET$/,
  );
  assert.match(
    budgetLine("throughput", 0.9, "at least", 0.9),
    /0\.90× {2}budget at least 0\.90× {2}met$/,
  );
});

Deno.test("every cell at 32 clients must match the baseline, as issue 10 sets it; other concurrencies 0.9×", () => {
  assert.deepEqual([1, 8, 32, 64].map(throughputBudget), [0.9, 0.9, 1.0, 0.9]);
});

Deno.test("throughput that falls anywhere between 1 and 32 clients is NOT MET; a fall at 64 does not count", () => {
  assert.match(
    rising([[1, 1500], [8, 4400], [32, 7800], [64, 7700]]),
    /1: 1,500, 8: 4,400, 32: 7,800 req\/s {2}never falls: met$/,
  );
  assert.match(
    rising([[1, 1500], [8, 4400], [32, 4300]]),
    /32: 4,300 req\/s {2}falls: NOT MET$/,
  );
  // In client order, whatever order the cells were measured in.
  assert.match(
    rising([[8, 4400], [1, 1500], [32, 7800]]),
    /1: 1,500, 8: 4,400, 32: 7,800 req\/s {2}never falls: met$/,
  );
  assert.match(rising([[1, 1500]]), /not measured$/);
});
