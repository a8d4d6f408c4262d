'use strict';
// An independent Dubbo 2 provider of IHelloService: sofa-rpc-node's RpcServer speaking the Dubbo
// protocol of dubbo-remoting (Hessian 2). No registry: callers connect to the printed address.
//
//   node hello_server.js [--port 0] [--version 0.0.0] [--delay-ms 5]
//
// Prints `listening 127.0.0.1:PORT` once bound. hash(String) is String.hashCode, computed here in
// JavaScript (strings are UTF-16 code units in JS as in Java); echo(String) returns its argument.

const { RpcServer } = require('sofa-rpc-node').server;
const dubboProtocol = require('dubbo-remoting');

const SERVICE = 'com.alibaba.dubbo.performance.demo.provider.IHelloService';
const HOST = '127.0.0.1';

function option(name, fallback) {
  const index = process.argv.indexOf(name);
  return index >= 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

function javaStringHash(text) {
  let h = 0;
  for (let i = 0; i < text.length; i++) {
    h = (Math.imul(h, 31) + text.charCodeAt(i)) | 0;
  }
  return h;
}

const delayMs = Number(option('--delay-ms', '5'));
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// RpcServer listens on every interface; this subclass binds the loopback address only.
class LoopbackRpcServer extends RpcServer {
  _startServer(port) {
    const net = require('net');
    const server = net.createServer();
    server.once('error', err => this.emit('error', err));
    server.on('connection', socket => this._handleSocket(socket));
    server.listen(port, HOST, () => {
      this.publishPort = server.address().port;
    });
    return server;
  }
}

const quiet = { debug() {}, info() {}, warn() {}, error: console.error };

async function main() {
  const server = new LoopbackRpcServer({
    logger: quiet,
    port: Number(option('--port', '0')),
    protocol: dubboProtocol,
  });
  server.on('error', err => console.error('server error:', err && err.message));
  server.addService({ interfaceName: SERVICE, version: option('--version', '0.0.0') }, {
    async hash(text) {
      await sleep(delayMs); // let calls overlap, so replies can leave out of order
      // A typed int: dubbo-remoting writes a falsy result (0) without a result flag otherwise.
      return { $class: 'int', $: javaStringHash(text) };
    },
    async echo(text) {
      await sleep(delayMs);
      return { $class: 'java.lang.String', $: text };
    },
  });
  await server.start();
  console.log(`listening ${HOST}:${server.publishPort}`);
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
