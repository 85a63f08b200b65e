// Port selection with npm's get-port, the shape `cargo bench --bench compare` gives portguard:
// the preferred port and nine fallbacks busy (listening on 127.0.0.1), the eleventh free.
//
// usage: node get-port-select.mjs GET_PORT_INDEX_JS RUNS
// prints: {"timings_us": [...]}, one timing a call, in call order
import net from 'node:net';
import {pathToFileURL} from 'node:url';

const [modulePath, runsArg] = process.argv.slice(2);
const runs = Number.parseInt(runsArg, 10);
const {default: getPort, clearLockedPorts} = await import(pathToFileURL(modulePath).href);

const listen = port =>
	new Promise((resolve, reject) => {
		const server = net.createServer();
		server.once('error', reject);
		server.listen({port, host: '127.0.0.1'}, () => resolve(server));
	});

const busy = [];
for (let i = 0; i < 10; i++) {
	busy.push(await listen(0));
}
// A port from the OS, released at once: free for the calls below.
const probe = await listen(0);
const free = probe.address().port;
await new Promise(resolve => probe.close(resolve));
const candidates = [...busy.map(server => server.address().port), free];

const once = async () => {
	// get-port remembers the ports it returned for 15 s and then skips them; forget them, so
	// that every call has the same work to do (untimed).
	clearLockedPorts();
	const started = process.hrtime.bigint();
	const port = await getPort({port: candidates});
	const took = Number(process.hrtime.bigint() - started) / 1000;
	if (port !== free) {
		throw new Error(`get-port returned ${port}, expected the free port ${free}`);
	}
	return took;
};

// Warm-up, untimed: the JIT and the module's first use.
for (let i = 0; i < 100; i++) {
	await once();
}
const timings = [];
for (let i = 0; i < runs; i++) {
	timings.push(await once());
}
for (const server of busy) {
	server.close();
}
console.log(JSON.stringify({timings_us: timings}));
