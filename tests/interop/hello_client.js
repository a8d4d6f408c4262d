'use strict';
// An independent Dubbo 2 consumer: dubbo2.js (DirectlyDubbo, one connection, no registry) calling
// IHelloService at HOST:PORT. Prints one JSON document with every argument and every answer; the
// caller checks the answers (this script computes no hash itself).
//
//   node hello_client.js HOST PORT [SERVICE_VERSION]

const { DirectlyDubbo, java } = require('dubbo2.js');
const HeartBeat = require('dubbo2.js/es7/heartbeat').default;

const SERVICE = 'com.alibaba.dubbo.performance.demo.provider.IHelloService';
const [host, port, version = '0.0.0'] = process.argv.slice(2);

const LONG_ASCII = Array.from({ length: 40000 }, (_, i) => String.fromCharCode(0x20 + (i * 7919) % 0x5f)).join('');
// 40,000 UTF-16 units; Hessian's first 32,768-unit chunk would end between the two halves of a 😀
const LONG_MIXED = 'a😀'.repeat(13333) + 'a';
const SAMPLES = {
  ascii: 'hello',
  latin: 'héllo wörld, ça va?',
  cjk: '你好，世界',
  emoji: 'ok 😀👍🏽 done',
  long_ascii: LONG_ASCII,
  long_mixed: LONG_MIXED,
};

// dubbo2.js's decoder drops event frames (heartbeat replies) after checking each header with
// HeartBeat.isHeartBeat; wrapping that check records the event frames it receives.
const events = [];
const isHeartBeat = HeartBeat.isHeartBeat;
HeartBeat.isHeartBeat = header => {
  const event = isHeartBeat.call(HeartBeat, header);
  if (event) {
    events.push({
      flags: header[2],
      status: header[3],
      requestId: Number(header.readBigUInt64BE(4)),
      bodyLength: header.readUInt32BE(12),
    });
  }
  return event;
};

function failure(err) {
  return err ? { name: err.constructor && err.constructor.name, message: String(err.message) } : null;
}

async function waitFor(condition, what) {
  for (let i = 0; i < 600 && !condition(); i++) {
    await new Promise(resolve => setTimeout(resolve, 50));
  }
  if (!condition()) throw new Error(`no ${what}`);
}

async function main() {
  const dubbo = DirectlyDubbo.from({ dubboAddress: `${host}:${port}`, dubboVersion: '2.0.2', dubboInvokeTimeout: 30 });
  const service = dubbo.proxyService({
    dubboInterface: SERVICE,
    version,
    methods: {
      hash: text => [java.String(text)],
      echo: text => [java.String(text)],
      nope: text => [java.String(text)],
    },
  });
  const out = { hash: {}, echo: {}, samples: SAMPLES };

  for (const [name, text] of Object.entries(SAMPLES)) {
    const { res, err } = await service.hash(text);
    out.hash[name] = { res, err: failure(err) };
  }
  for (const [name, text] of Object.entries(SAMPLES)) {
    const { res, err } = await service.echo(text);
    out.echo[name] = { same: res === text, length: typeof res === 'string' ? res.length : null, err: failure(err) };
  }
  {
    const { res, err } = await service.nope('x');
    out.unknown = { res, err: failure(err) };
  }

  // 100 calls in flight at once on the one connection.
  const args = Array.from({ length: 100 }, (_, i) => `call ${i} é😀 ${'x'.repeat(i)}`);
  const answers = await Promise.all(args.map(text => service.hash(text)));
  out.concurrent = answers.map(({ res, err }, i) => ({ arg: args[i], res, err: failure(err) }));

  // A heartbeat as dubbo2.js encodes it, on the same connection, alone (its decoder leaves the bytes
  // after an event frame until more arrive, so nothing else is in flight), then one more call.
  dubbo._socketWorker._socket.write(HeartBeat.encode());
  await waitFor(() => events.length > 0, 'heartbeat reply');
  out.heartbeat = events[0];
  const after = await service.hash('after heartbeat');
  out.after_heartbeat = { arg: 'after heartbeat', res: after.res, err: failure(after.err) };

  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
