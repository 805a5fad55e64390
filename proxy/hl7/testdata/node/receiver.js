// An MLLP receiver built on simple-hl7 that acknowledges every message
// (MSA|AA|<MSH-10>) and appends what it received, as a JSON string per
// line, to the file named by its first argument. It listens on 127.0.0.1
// only, on a port of the system's choosing, and prints "LISTENING <port>".
'use strict';
const net = require('net');
const fs = require('fs');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port) {
  this.once('listening', () => process.stdout.write('LISTENING ' + this.address().port + '\n'));
  return listen.call(this, port, '127.0.0.1');
};

const hl7 = require('simple-hl7');
const out = process.argv[2];
const app = hl7.tcp();
app.use(function (req, res, next) {
  if (!req) {
    return;
  }
  fs.appendFileSync(out, JSON.stringify(req.raw) + '\n');
  res.end();
});
app.start(0);
process.on('SIGTERM', () => process.exit(0));
