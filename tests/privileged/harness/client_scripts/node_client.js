// The node client of the privileged tests: one HTTPS request with node's own (embedded)
// OpenSSL. Trusts the test CA through NODE_EXTRA_CA_CERTS.
//   node node_client.js URL [--body-file F] [--pieces N] [--method M] [--delay-ms MS] [--header 'K: V']
// Prints one JSON line: its pid and comm (what the monitor must report) and the answer.
'use strict';
const fs = require('fs');
const https = require('https');

const argv = process.argv.slice(2);
const url = new URL(argv[0]);
let body = Buffer.alloc(0);
let pieces = 1;
let method = null;
let delayMs = 0;
const headers = {};
for (let i = 1; i < argv.length; i += 2) {
  const value = argv[i + 1];
  if (argv[i] === '--body-file') body = fs.readFileSync(value);
  else if (argv[i] === '--pieces') pieces = parseInt(value, 10);
  else if (argv[i] === '--method') method = value;
  else if (argv[i] === '--delay-ms') delayMs = parseInt(value, 10);
  else if (argv[i] === '--header') {
    const at = value.indexOf(':');
    headers[value.slice(0, at).trim()] = value.slice(at + 1).trim();
  }
}
headers['content-length'] = String(body.length);

function send() {
  const options = { method: method || (body.length ? 'POST' : 'GET'), headers };
  const req = https.request(url, options, (res) => {
    const parts = [];
    res.on('data', (d) => parts.push(d));
    res.on('end', () => {
      const text = Buffer.concat(parts).toString('utf8');
      const comm = fs.readFileSync('/proc/self/comm', 'utf8').trim();
      console.log(JSON.stringify({ pid: process.pid, comm, status: res.statusCode, body: text.slice(0, 65536) }));
      process.exitCode = res.statusCode === 200 ? 0 : 1;
    });
  });
  req.on('error', (err) => {
    console.error(String(err));
    process.exitCode = 2;
  });
  // Each write is its own SSL_write once the socket is connected.
  const step = Math.max(1, Math.ceil(body.length / pieces));
  for (let i = 0; i < body.length; i += step) req.write(body.subarray(i, i + step));
  req.end();
}

// --delay-ms: a long-lived process whose first request comes later.
setTimeout(send, delayMs);
