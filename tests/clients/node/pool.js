// node-postgres Pool against a server with an idle policy (tests/e2e/test_clients.py).
// Usage: node pool.js HOST PORT APPLICATION listener|nolistener
// Warms the pool to 10 connections, prints "warm", waits for a line on stdin,
// runs 50 queries one after the other and prints {"ok":N,"errors":N,"idle_errors":N}.
const { Pool } = require('pg');

const [host, port, app, mode] = process.argv.slice(2);
const pool = new Pool({ host, port: Number(port), user: 'postgres', database: 'postgres',
                        application_name: app, max: 10 });
let idleErrors = 0;
if (mode === 'listener') {
  pool.on('error', () => { idleErrors += 1; });
}

async function main() {
  const clients = await Promise.all(Array.from({ length: 10 }, () => pool.connect()));
  await Promise.all(clients.map((c) => c.query('SELECT 1')));
  clients.forEach((c) => c.release());
  process.stdout.write('warm\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  let ok = 0;
  let errors = 0;
  for (let i = 0; i < 50; i += 1) {
    try {
      await pool.query('SELECT 1');
      ok += 1;
    } catch (e) {
      errors += 1;
    }
  }
  process.stdout.write(JSON.stringify({ ok, errors, idle_errors: idleErrors }) + '\n');
  await pool.end();
  process.exit(0);
}

main().catch((e) => { process.stderr.write(`${e}\n`); process.exit(2); });
