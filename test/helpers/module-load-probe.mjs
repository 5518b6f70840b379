// Preloaded (node --import) by a start-up test: says on stderr, in order, when the first byte goes to
// stdout and when the CommonJS modules it watches for (CS_MCP_PROBE_MODULES, a regular expression) load.
import Module from 'node:module';

const watched = new RegExp(process.env.CS_MCP_PROBE_MODULES ?? '^$');
const load = Module._load;
Module._load = function (request, ...rest) {
  if (watched.test(request)) process.stderr.write(`probe: loaded ${request}\n`);
  return load.call(this, request, ...rest);
};
const write = process.stdout.write.bind(process.stdout);
let first = true;
process.stdout.write = (...args) => {
  if (first) process.stderr.write('probe: first stdout write\n');
  first = false;
  return write(...args);
};
