// The traced program of `busted bench boringssl`: a Bun client (BoringSSL inside Bun)
// making many small SSL_write / SSL_read calls over loopback TLS, against the server of
// busted/bench/tls_workload.py.
//   bun bun_tls_client.mjs --port P --cafile CA [--calls N]
// Protocol on stdin/stdout (as the Python clients of tls_workload.py): it connects, makes
// one request, prints "ready"; each "warm" line makes one more request ("warmed"); "go"
// measures and prints one JSON line:
//   write_us / write_wall_us: CPU (process) and wall time per 100-byte socket.write
//     (one SSL_write each) into the server's sink;
//   read_us / read_wall_us: per 100-byte record read (one SSL_read each), records sent
//     in bursts of BURST while the client sleeps, so they wait in the socket.

const RECORD = 100;
const BURST = 400; // records per burst: ~50 KB, within the first TCP receive window
const SINK_LENGTH = 2 ** 40;
const SNI = "api.openai.com";

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].slice(2)] = process.argv[i + 1];
const port = Number(args.port);
const calls = Number(args.calls || 10000);
const ca = await Bun.file(args.cafile).text();

// One TLS connection; `expect(n)` resolves once n more bytes have arrived, `response()`
// once a whole HTTP response (content-length) has.
async function connect() {
  const state = { received: 0, want: 0, done: null, text: null };
  let ready;
  const handshaken = new Promise((resolve, reject) => { ready = { resolve, reject }; });
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    tls: { ca, serverName: SNI },
    socket: {
      handshake(_s, ok, err) { ok ? ready.resolve() : ready.reject(err); },
      data(_s, chunk) {
        state.received += chunk.length;
        if (state.text !== null) {
          state.text += chunk.toString("latin1");
          const end = state.text.indexOf("\r\n\r\n");
          const length = /content-length: *(\d+)/i.exec(state.text);
          if (end >= 0 && length) state.want = state.received - state.text.length + end + 4 + Number(length[1]);
        }
        if (state.done && state.want && state.received >= state.want) {
          const done = state.done;
          state.done = null;
          state.text = null;
          done();
        }
      },
      error(_s, err) { ready.reject(err); },
    },
  });
  await handshaken;
  socket.expect = (n) => new Promise((resolve) => {
    state.want = state.received + n;
    state.done = resolve;
  });
  socket.response = () => new Promise((resolve) => {
    state.want = 0;
    state.text = "";
    state.done = resolve;
  });
  return socket;
}

function head(method, path, length, extra = "") {
  return `${method} ${path} HTTP/1.1\r\nHost: ${SNI}\r\ncontent-type: application/json\r\n` +
    `${extra}content-length: ${length}\r\n\r\n`;
}

const requests = await connect();
const sink = await connect();
sink.write(head("POST", "/v1/chat/completions", SINK_LENGTH));

async function request() {
  const body = JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hello" }] });
  const answer = requests.response();
  requests.write(head("POST", "/v1/chat/completions", body.length) + body);
  await answer;
}

function cpuUs() {
  const u = process.cpuUsage();
  return u.user + u.system;
}

async function measure() {
  const record = Buffer.alloc(RECORD, "x");
  let short = 0;
  let cpu = cpuUs();
  let wall = performance.now();
  for (let i = 0; i < calls; i++) {
    if (sink.write(record) !== RECORD) short++;
  }
  const writeUs = (cpuUs() - cpu) / calls;
  const writeWallUs = ((performance.now() - wall) * 1000) / calls;

  const rounds = Math.max(1, Math.round(calls / BURST));
  const answerHead = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n" +
    `content-length: ${BURST * RECORD}\r\n\r\n`;
  let readCpu = 0;
  let readWall = 0;
  for (let r = 0; r < rounds; r++) {
    const arrived = requests.expect(answerHead.length + BURST * RECORD);
    requests.write(head("POST", "/v1/chat/completions", 2, `x-bench-burst: ${BURST}\r\n`) + "{}");
    Bun.sleepSync(50); // the whole burst waits in the socket meanwhile (no CPU)
    cpu = cpuUs();
    wall = performance.now();
    await arrived;
    readCpu += cpuUs() - cpu;
    readWall += performance.now() - wall;
  }
  const records = rounds * BURST;
  return {
    write_us: writeUs, write_wall_us: writeWallUs, short_writes: short,
    read_us: readCpu / records, read_wall_us: (readWall * 1000) / records,
    calls, records, pid: process.pid,
  };
}

await request();
console.log("ready");
for await (const line of console) {
  const word = line.trim();
  if (word === "warm") {
    await request();
    console.log("warmed");
  } else if (word === "go") {
    console.log(JSON.stringify(await measure()));
    process.exit(0);
  }
}
