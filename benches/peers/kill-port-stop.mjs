// Stop to free port with npm's kill-port: `killPort(PORT)`, then bind 127.0.0.1:PORT until the
// bind succeeds, timed inside node (node's own start-up is not counted).
//
// usage: node kill-port-stop.mjs KILL_PORT_INDEX_JS PORT
// prints: {"ms": ...}
import net from 'node:net';
import {createRequire} from 'node:module';

const [modulePath, portArg] = process.argv.slice(2);
const port = Number.parseInt(portArg, 10);
const killPort = createRequire(import.meta.url)(modulePath);

const bindOnce = () =>
	new Promise(resolve => {
		const server = net.createServer();
		server.once('error', () => resolve(false));
		server.listen({port, host: '127.0.0.1'}, () => server.close(() => resolve(true)));
	});

const deadline = Date.now() + 10_000;
const started = process.hrtime.bigint();
await killPort(port);
while (!(await bindOnce())) {
	if (Date.now() > deadline) {
		console.error(`port ${port} still busy 10 s after killPort`);
		process.exit(1);
	}
}
const ms = Number(process.hrtime.bigint() - started) / 1e6;
console.log(JSON.stringify({ms}));
