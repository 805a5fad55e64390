// Prints two FHIR resources side by side, one line per value: the path,
// the value in the first file and the value in the second ("-" where a
// value is absent). meta is left out.
//
// Usage: node compare.js WHOLE.json DEIDENTIFIED.json
'use strict';
const fs = require('fs');

function flatten(v, path, out) {
  if (Array.isArray(v)) {
    v.forEach((x, i) => flatten(x, `${path}[${i}]`, out));
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k !== 'meta') flatten(x, path ? `${path}.${k}` : k, out);
    }
  } else {
    out.set(path, String(v));
  }
  return out;
}

const [a, b] = process.argv.slice(2).map((f) => flatten(JSON.parse(fs.readFileSync(f, 'utf8')), '', new Map()));
const paths = [...a.keys(), ...[...b.keys()].filter((k) => !a.has(k))];
const width = (xs, max) => Math.min(max, Math.max(...xs.map((x) => x.length)));
const pw = width(paths, 44);
const aw = width([...a.values(), 'whole'], 40);
const cut = (s, n) => (s.length > n ? s.slice(0, n - 1) + '…' : s.padEnd(n));
console.log(`${cut('', pw)}  ${cut('whole', aw)}  de-identified`);
for (const p of paths) {
  console.log(`${cut(p, pw)}  ${cut(a.get(p) ?? '-', aw)}  ${b.get(p) ?? '-'}`);
}
