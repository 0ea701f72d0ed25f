// Runs every benchmark script bench/*.mjs in turn, in name order, each in
// its own Node.js process, and stops at the first that fails.
//
//   node scripts/run-benchmarks.mjs [--quick] [name ...]
//
// Names (for example "status" or "apply-stall") select scripts; without
// them every script runs. With --quick each script gets the arguments that
// a line "// bench:quick <arguments>" in it names, or --quick when it has
// no such line, for a smoke run of a few minutes in all.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const benchDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'bench');
const quick = process.argv.includes('--quick');
const selected = process.argv.slice(2).filter((argument) => argument !== '--quick');

const scripts = readdirSync(benchDir)
  .filter((file) => file.endsWith('.mjs'))
  .sort();
const unknown = selected.filter((name) => !scripts.includes(`${name}.mjs`));
if (unknown.length > 0) {
  console.error(`Unknown benchmark(s): ${unknown.join(', ')}. Expected names of bench/*.mjs without .mjs: ${scripts.map((file) => basename(file, '.mjs')).join(', ')}.`);
  process.exit(2);
}

/** Returns the arguments of a quick run of a script. */
function quickArguments(path) {
  const marker = /^\/\/ bench:quick(.*)$/m.exec(readFileSync(path, 'utf8'));
  return marker ? marker[1].trim().split(/\s+/).filter(Boolean) : ['--quick'];
}

const started = performance.now();
for (const file of scripts) {
  if (selected.length > 0 && !selected.includes(basename(file, '.mjs'))) continue;
  const path = join(benchDir, file);
  const args = quick ? quickArguments(path) : [];
  console.log(`\n=== bench/${file} ${args.join(' ')}`.trimEnd());
  const scriptStarted = performance.now();
  const run = spawnSync(process.execPath, [path, ...args], { stdio: 'inherit' });
  const minutes = ((performance.now() - scriptStarted) / 60_000).toFixed(1);
  if (run.status !== 0) {
    console.error(`bench/${file} failed (exit code ${run.status ?? run.signal}) after ${minutes} min`);
    process.exit(1);
  }
  console.log(`=== bench/${file} finished in ${minutes} min`);
}
console.log(`\nAll benchmarks finished in ${((performance.now() - started) / 60_000).toFixed(1)} min`);
